//! The build solver.
//!
//! Walks the build graph from the frontend, computes each step's cache key before doing any work,
//! runs the misses (RUN in the runtime sandbox, COPY/ADD onto the step's snapshot), and assembles
//! the image config, history and manifest into the store. Emits progress events; knows nothing of
//! terminals.
//!
//! ```text
//! Builder::build(BuildRequest, &dyn ProgressSink)
//!   parse + plan (frontend) -> bases resolved (store, else ImageProvider)
//!   -> context walked (stat cache), stages evaluated, every step's key computed
//!   -> cache looked up (one read) -> stages run in parallel (bounded by jobs):
//!        hit: the recorded layer; miss: snapshot of the parent stack -> RUN / COPY / WORKDIR
//!        -> overlay diff -> layer blob -> snapshot committed as sha256-<ChainID hex>
//!   -> config + manifest -> store (named) -> cache and holds written (one transaction)
//!   -> the context's stat cache file replaced
//! ```

mod cache;
mod cache_mount_transfer;
mod clone;
mod config;
mod context;
mod copy;
mod error;
pub mod export;
mod filter;
mod layers;
mod manifest;
mod mounts;
mod platform;
mod progress;
mod remote;
mod remote_cache;
mod reproducible;
mod run;
mod slots;
mod solver;
mod source;
mod work_queue;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use cache::prune_context_caches;
pub use cache_mount_transfer::{export_cache_mount, import_cache_mount};
pub use config::{ContainerConfig, HISTORY_COMMENT, HealthcheckConfig, History, ImageConfig};
pub use error::{BuildError, Result};
pub use layers::{Layer, snapshot_id};
pub use mounts::{CACHE_MOUNTS_DIR, SecretSource, prune_cache_mounts};
pub use progress::{DownloadPhase, Event, MissReason, NoProgress, ProgressSink, StepInfo, Stream};
pub use remote::prune_downloads;
pub use remote_cache::{
    ARTIFACT_TYPE, CACHE_MOUNTS_FIELD, CONFIG_FIELD, CacheEntry, CacheImport, LayerSource,
    artifact_config, artifact_layers, cache_mounts_of_config, entries_of_config, select,
};
pub use reproducible::source_date_epoch;
pub use slots::SlotPrune;
pub use solver::scratch_dir;
pub use strata_runtime::spec::Network;

use strata_snapshotter::{LayerOptions, Snapshotter};
use strata_store::{Image, Platform, Reference, Store};

/// Obtains a base image that is not in the store (the binary plugs `pull` in here).
pub trait ImageProvider: Send + Sync {
    /// Makes `reference` (as written after FROM or `COPY --from`) available in `store` and
    /// returns it resolved for `platform`.
    fn provide(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> std::result::Result<Image, BuildError>;
}

/// The default provider: strata builds offline, so a missing image is an error that says how
/// to get it.
pub struct LocalImagesOnly;

impl ImageProvider for LocalImagesOnly {
    fn provide(
        &self,
        _: &Store,
        reference: &str,
        _: &Platform,
    ) -> std::result::Result<Image, BuildError> {
        Err(BuildError::ImageNotFound(format!(
            "image {reference:?} is not in the local store; get it with `strata pull {reference}`, \
             `strata load -i IMAGE.tar` or `strata import ROOTFS.tar {reference}`"
        )))
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its path (for error locations and `<Dockerfile>.dockerignore`); `None` when it came on
    /// standard input.
    pub dockerfile_path: Option<PathBuf>,
    /// The context directory; `None` builds without a context (`strata build -`).
    pub context: Option<PathBuf>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--label K=V`, set on the image after the Dockerfile's own labels.
    pub labels: BTreeMap<String, String>,
    /// Names for the image (none: an untagged image).
    pub tags: Vec<Reference>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// The network of RUN steps that do not ask for one (`--network`).
    pub network: Network,
    /// `--pull`: ask the image provider for every base image named by tag, even when the store
    /// has one, so a tag that moved on the registry is built from its new image.
    pub pull: bool,
    /// `--platform`: the platform to build for (`None`: this machine's). Only platforms this
    /// machine runs natively can be built (no emulation).
    pub platform: Option<Platform>,
    /// `--secret`: the secrets RUN steps may mount, by id (values are read when mounted).
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh`: SSH agent sockets RUN steps may mount, by id.
    pub ssh: BTreeMap<String, PathBuf>,
}

impl BuildRequest {
    /// A request with the defaults: no args, no target, host network.
    pub fn new(dockerfile: String, context: Option<PathBuf>) -> BuildRequest {
        BuildRequest {
            dockerfile,
            dockerfile_path: None,
            context,
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            no_cache: false,
            network: Network::Host,
            pull: false,
            platform: None,
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image, as stored.
    pub image: Image,
    /// Steps that ran.
    pub executed: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Every step's result in this build (made or found), for `--cache-to`.
    pub cache: Vec<CacheEntry>,
    /// Ids of the cache mounts the build's RUN steps name (ran or cached), sorted, for
    /// `--cache-to ...,cache-mounts=true`.
    pub cache_mounts: Vec<String>,
}

/// Builds images into a store.
pub struct Builder {
    store: Store,
    snapshotter: Snapshotter,
    sandbox: strata_runtime::Sandbox,
    images: Arc<dyn ImageProvider>,
    jobs: usize,
    layer_options: LayerOptions,
    import: CacheImport,
}

impl Builder {
    /// A builder over `store`, unpacking into `snapshotter`, running RUN steps with `sandbox`.
    pub fn new(
        store: Store,
        snapshotter: Snapshotter,
        sandbox: strata_runtime::Sandbox,
    ) -> Builder {
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        Builder {
            store,
            snapshotter,
            sandbox,
            images: Arc::new(LocalImagesOnly),
            jobs,
            layer_options: LayerOptions::default(),
            import: CacheImport::new(),
        }
    }

    /// Where base images that are not in the store come from.
    pub fn with_image_provider(mut self, provider: Arc<dyn ImageProvider>) -> Builder {
        self.images = provider;
        self
    }

    /// How many stages may run at once (default: the number of cores).
    pub fn with_jobs(mut self, jobs: usize) -> Builder {
        self.jobs = jobs.max(1);
        self
    }

    /// How new layers are written (compression, `SOURCE_DATE_EPOCH`).
    pub fn with_layer_options(mut self, options: LayerOptions) -> Builder {
        self.layer_options = options;
        self
    }

    /// Cache entries from elsewhere (`--cache-from`) that count as hits.
    pub fn with_cache_import(mut self, import: CacheImport) -> Builder {
        self.import = import;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshotter
    }

    /// Builds `request`, reporting to `progress`. Blocking; stages run on threads of their own.
    pub fn build(
        &self,
        request: &BuildRequest,
        progress: &dyn ProgressSink,
    ) -> Result<BuildOutcome> {
        solver::build(self, request, progress)
    }
}

//! The entry point: a [`Client`] holds the configuration and one connection per registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Scope;
use crate::config::ClientConfig;
use crate::connection::{Call, Connection, status_error};
use crate::credentials::Credential;
use crate::error::Result;
use crate::names::{Registry, Repository};
use crate::repository::RepositoryClient;

/// A registry client. Cheap to clone; clones share connections, credentials and tokens.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    connections: Arc<Mutex<HashMap<Registry, Arc<Connection>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        Client {
            config: Arc::new(config),
            connections: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client with [`ClientConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(Client::new(ClientConfig::from_env()?))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Operations on one repository. Nothing is contacted until an operation runs.
    pub fn repository(&self, repository: Repository) -> RepositoryClient {
        let registry = repository.registry().clone();
        let conn = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(registry.clone())
            .or_insert_with(|| Arc::new(Connection::new(registry, self.config.clone(), None)))
            .clone();
        RepositoryClient {
            conn,
            repo: repository,
        }
    }

    /// Checks that `registry` accepts `credential` (what `strata login` does before saving
    /// it): pings the registry and, when it asks for authentication, authenticates as Docker
    /// does at login (Basic on `/v2/`, or a token without scope from the token endpoint).
    pub async fn check_login(&self, registry: &Registry, credential: &Credential) -> Result<()> {
        let conn = Connection::new(
            registry.clone(),
            self.config.clone(),
            Some(Some(credential.clone())),
        );
        let what = format!("log in to {registry}");
        let scopes: [Scope; 0] = [];
        let call = Call {
            what: &what,
            image: "a login check",
            repository: None,
            scopes: &scopes,
            digest: None,
        };
        let response = conn
            .send(&call, |http, base| {
                Ok(
                    http.get(base.join("v2/").map_err(|e| crate::Error::Protocol {
                        what: what.clone(),
                        why: e.to_string(),
                    })?),
                )
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&what, response).await)
        }
    }
}

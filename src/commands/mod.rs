//! One module per command (or group of commands).

pub mod build;
pub mod commit;
pub mod container_output;
pub mod cp;
pub mod debug;
pub mod exec;
pub mod history;
pub mod image_output;
pub mod images;
pub mod import;
pub mod inspect;
pub mod lifecycle;
pub mod lint;
pub mod login;
pub mod logs;
pub mod parse_ref;
pub mod prune;
pub mod ps;
pub mod pull;
pub mod push;
pub mod registry;
pub mod run;
pub mod save_load;
pub mod tag;
pub mod version;
pub mod volume;

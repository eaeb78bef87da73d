//! One module per command (or group of commands).

pub mod build;
pub mod debug;
pub mod history;
pub mod image_output;
pub mod images;
pub mod import;
pub mod inspect;
pub mod login;
pub mod parse_ref;
pub mod prune;
pub mod save_load;
pub mod tag;
pub mod version;

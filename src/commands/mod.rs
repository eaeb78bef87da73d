//! One module per command (or group of commands).

pub mod debug;
pub mod login;
pub mod version;

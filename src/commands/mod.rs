//! One module per command (or group of commands).

pub mod debug;
pub mod version;

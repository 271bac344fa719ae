//! The SSH front door. It translates: russh callbacks become calls on the controller core;
//! it knows nothing of Docker, builds or deploys.

mod bridge;
pub mod exec;
mod handler;
pub mod server;

pub use server::{serve, ServerOptions};

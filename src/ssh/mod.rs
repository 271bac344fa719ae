//! The SSH front door. It translates: russh callbacks become calls on the controller core;
//! it knows nothing of Docker, builds or deploys.

pub mod exec;
mod handler;
mod interactive;
pub mod server;

pub use server::{serve, ServerOptions};

//! The SSH front door. It translates: russh callbacks become calls on the controller core;
//! it knows nothing of Docker, builds or deploys.

mod exec;
mod handler;
mod server;

pub use server::{serve, ServerOptions};

//! The SSH front door. It translates: russh callbacks become calls on the controller core;
//! it knows nothing of Docker, builds or deploys.

pub mod exec;
pub mod gate;
mod handler;
mod interactive;
pub mod server;
pub mod terminals;

pub use gate::Limits;
pub use server::{serve, ServerOptions};

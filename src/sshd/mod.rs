//! SSH server plumbing shared by the front door (`ssh`) and the node agent (`agent`): the
//! accept loop and its server config (`server`), who may hold a connection (`gate`), and
//! terminals requested on channels (`terminals`). Nothing here knows what a command is.

pub mod gate;
pub mod server;
pub mod terminals;

pub use gate::Limits;
pub use terminals::{Pty, Terminals};

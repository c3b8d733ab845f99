//! Devices (seed 003's App Players) and the admins who watch and command them, sans-IO.
//!
//! - [`hub`]: one tenant's devices, admins and commands as a state machine
//!   (`DeviceHub::apply(input, now) -> Vec<DeviceEffect>`), with its deadlines.
//! - [`catalog`]: the commands an admin may send and the schemas their params are checked against.
//!
//! The wire types (register, state, commands, what admins see) are in
//! [`crate::protocol::device`].

pub mod catalog;
pub mod hub;
mod timers;

pub use catalog::{CommandCatalog, CommandError, ParamType, ParamsSchema};
pub use hub::{
    CLOSE_REPLACED, ConnId, DeviceEffect, DeviceHub, DeviceInput, DeviceRecord, DeviceReply, DeviceWrite, HubConfig,
    RequestId, WriteId,
};

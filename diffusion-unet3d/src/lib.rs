#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod limits;
pub mod sd;
mod sites;
pub mod svd;

//! SeaORM entities of the profile service.

pub mod identity;
pub mod profile;

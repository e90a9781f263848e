//! SeaORM entities, one per table. Every table is keyed by `tenant_id` first.

pub mod response;
pub mod shopper_event;
pub mod survey;

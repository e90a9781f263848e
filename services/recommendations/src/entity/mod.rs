//! SeaORM entities, one per table. Every table is keyed by `tenant_id` first.

pub mod co_visit;
pub mod item;
pub mod popularity;
pub mod session_item;
pub mod shopper_item;

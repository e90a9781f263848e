//! SeaORM entities, one per table. Every table is keyed by tenant first.

pub mod ledger_entry;
pub mod point_rule;

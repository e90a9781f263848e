//! SeaORM entities, one per table. Every table is keyed by tenant first.

pub mod action;
pub mod decision;
pub mod decision_outcome;

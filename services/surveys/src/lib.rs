//! The surveys service

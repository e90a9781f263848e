//! The gamification service

//! Where the app-specific password comes from, and its normalisation.

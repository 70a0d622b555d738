//! The DAV side of the bridge: routing, local discovery, href mapping, proxying and
//! explanation of iCloud's refusals.

pub mod xml;

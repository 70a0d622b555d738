//! A faithful local stand-in for iCloud's CalDAV and CardDAV servers (front and partition
//! roles on separate loopback ports), with switches for every known quirk and fault.

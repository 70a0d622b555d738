//! A faithful local stand-in for iCloud, used by `demo` and the tests.

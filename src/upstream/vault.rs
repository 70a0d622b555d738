//! The credential vault in data_dir: atomic, mode 0600.

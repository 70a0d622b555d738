//! Local client logins: argon2id hashes under data_dir.

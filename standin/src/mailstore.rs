//! A small in-memory mail store per account (C9 folders), for the IMAP role: mailboxes with
//! UIDs, flags, modification sequences and raw RFC 5322 messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folders of an iCloud account (NOTE-e04), with their LIST attributes.
pub const FOLDERS: &[(&str, &str)] = &[
    ("INBOX", "\\NoInferiors"),
    ("Archive", "\\Archive"),
    ("Deleted Messages", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Notes", ""),
    ("Sent Messages", "\\Sent"),
    ("Drafts", "\\Drafts"),
];

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub uid: u32,
    pub flags: BTreeSet<String>,
    /// Seconds since the epoch.
    pub internal_date: u64,
    pub modseq: u64,
    pub raw: Vec<u8>,
}

impl Message {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// One mailbox.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub name: String,
    pub attrs: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: Vec<Message>,
}

impl Mailbox {
    fn new(name: &str, attrs: &str, uid_validity: u32) -> Mailbox {
        Mailbox {
            name: name.to_string(),
            attrs: attrs.to_string(),
            uid_validity,
            uid_next: 1,
            highest_modseq: 1,
            messages: Vec::new(),
        }
    }

    /// Add a message; returns its UID.
    pub fn append(&mut self, raw: Vec<u8>, flags: BTreeSet<String>) -> u32 {
        let uid = self.uid_next;
        self.uid_next += 1;
        self.highest_modseq += 1;
        self.messages.push(Message {
            uid,
            flags,
            internal_date: now_secs(),
            modseq: self.highest_modseq,
            raw,
        });
        uid
    }

    /// Bump the modification sequence of message `idx` (after a flag change).
    pub fn touch(&mut self, idx: usize) {
        self.highest_modseq += 1;
        if let Some(m) = self.messages.get_mut(idx) {
            m.modseq = self.highest_modseq;
        }
    }

    pub fn unseen(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| !m.has_flag("\\Seen"))
            .count()
    }
}

/// All mailboxes of one account.
#[derive(Clone, Debug)]
pub struct MailStore {
    pub mailboxes: BTreeMap<String, Mailbox>,
    next_validity: u32,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for MailStore {
    fn default() -> Self {
        MailStore::new()
    }
}

impl MailStore {
    /// The standard folders, with two messages in INBOX.
    pub fn new() -> MailStore {
        let base = (now_secs() % 1_000_000_000) as u32 + 1;
        let mut s = MailStore {
            mailboxes: BTreeMap::new(),
            next_validity: base + FOLDERS.len() as u32,
        };
        for (i, (name, attrs)) in FOLDERS.iter().enumerate() {
            s.mailboxes
                .insert(name.to_string(), Mailbox::new(name, attrs, base + i as u32));
        }
        if let Some(inbox) = s.mailboxes.get_mut("INBOX") {
            inbox.append(
                sample("Welcome to iCloud Mail", "Apple <noreply@icloud.example>"),
                BTreeSet::from(["\\Seen".to_string()]),
            );
            inbox.append(
                sample("Dinner on Friday?", "Bob <bob@example.org>"),
                BTreeSet::new(),
            );
        }
        s
    }

    /// The mailbox with this name (INBOX case-insensitively).
    pub fn get(&self, name: &str) -> Option<&Mailbox> {
        self.mailboxes.get(&canonical(name))
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Mailbox> {
        self.mailboxes.get_mut(&canonical(name))
    }

    /// Create a mailbox; false if it exists or the name is empty.
    pub fn create(&mut self, name: &str) -> bool {
        let name = canonical(name);
        if name.is_empty() || self.mailboxes.contains_key(&name) {
            return false;
        }
        let v = self.next_validity;
        self.next_validity += 1;
        self.mailboxes
            .insert(name.clone(), Mailbox::new(&name, "", v));
        true
    }
}

/// `INBOX` is case-insensitive (RFC 3501 5.1).
pub fn canonical(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.to_string()
    }
}

/// A short plain-text message.
pub fn sample(subject: &str, from: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: alice@icloud.com\r\nSubject: {subject}\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@icloud.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{subject}\r\n",
        uuid::Uuid::new_v4()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_folders_and_uids() {
        let mut s = MailStore::new();
        assert_eq!(s.mailboxes.len(), FOLDERS.len());
        let inbox = s.get_mut("inbox").unwrap();
        assert_eq!(inbox.messages.len(), 2);
        let uid = inbox.append(b"x".to_vec(), BTreeSet::new());
        assert_eq!(uid, 3);
        assert_eq!(inbox.unseen(), 2);
        assert!(s.create("Projects"));
        assert!(!s.create("Projects"));
    }
}

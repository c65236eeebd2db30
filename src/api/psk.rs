//! The pre-shared key format of `psk.txt`: `<identity>:<hex key>`, as stunnel reads it.
//!
//! Shared by the mover (which refuses a bad key file before connecting), the controller
//! (which validates user Secrets) and the policy host (which validates plugin output).
//! Nothing here ever formats the key itself into an error or a Debug string.

use std::fmt;

use rand::RngExt as _;

/// The identity ferrosync writes into keys it generates, as the reference does.
pub const DEFAULT_IDENTITY: &str = "volsync";
/// Fewest hex digits accepted: 32 digits are 128 bits.
pub const MIN_HEX_DIGITS: usize = 32;
/// Most hex digits accepted: stunnel's limit on a PSK is 1024 hex digits (512 bytes).
pub const MAX_HEX_DIGITS: usize = 1024;
/// Longest identity accepted (TLS allows up to 128 bytes in stunnel's PSK handling).
pub const MAX_IDENTITY_LEN: usize = 128;
/// Bytes of randomness in a generated key.
pub const GENERATED_KEY_BYTES: usize = 64;

/// Why a `psk.txt` was refused. The messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// No `:` separates identity and key.
    #[error("psk.txt must be \"<identity>:<hex key>\"; no ':' separator found")]
    NoSeparator,
    /// The identity is empty, too long, or has whitespace, control characters or ':'.
    #[error(
        "psk.txt identity must be 1 to {MAX_IDENTITY_LEN} printable characters without spaces or ':'"
    )]
    BadIdentity,
    /// The key has a character that is not a hex digit.
    #[error("psk.txt key must be hexadecimal digits only")]
    NotHex,
    /// The key is shorter than 128 bits.
    #[error("psk.txt key has {0} hex digits; at least {MIN_HEX_DIGITS} (128 bits) are required")]
    TooShort(usize),
    /// The key is longer than stunnel accepts.
    #[error("psk.txt key has {0} hex digits; at most {MAX_HEX_DIGITS} are allowed")]
    TooLong(usize),
    /// The key has an odd number of hex digits, so it is not whole bytes.
    #[error("psk.txt key must have an even number of hex digits (whole bytes)")]
    OddLength,
    /// The file holds more than one line.
    #[error("psk.txt must hold exactly one line")]
    MultipleLines,
    /// The file holds more keys than a rotation needs.
    #[error("psk.txt holds {0} keys; at most {MAX_KEYS} (the current and the previous)")]
    TooManyKeys(usize),
    /// Two lines share an identity: a stunnel server could not tell their keys apart.
    #[error("psk.txt has two keys with one identity; each key needs its own")]
    DuplicateIdentity,
}

/// Most keys one `psk.txt` holds: the current one and, during a rotation, the previous.
pub const MAX_KEYS: usize = 2;

/// The keys of a `psk.txt`, one per line. The first is current: a stunnel client presents
/// it (stunnel's default `PSKidentity` is the file's first). A stunnel server accepts any,
/// looked up by the identity the client presents; so while a rotation is under way a
/// destination accepts the previous key too.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Psk>,
}

impl KeyRing {
    /// Parses the contents of `psk.txt`: one to [`MAX_KEYS`] lines, distinct identities.
    pub fn parse(contents: &str) -> Result<Self, PskError> {
        let body = contents.strip_suffix('\n').unwrap_or(contents);
        let keys = body
            .split('\n')
            .map(Psk::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    fn new(keys: Vec<Psk>) -> Result<Self, PskError> {
        if keys.len() > MAX_KEYS {
            return Err(PskError::TooManyKeys(keys.len()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.identity == k.identity) {
                return Err(PskError::DuplicateIdentity);
            }
        }
        Ok(Self { keys })
    }

    /// A ring of one key.
    pub fn single(key: Psk) -> Self {
        Self { keys: vec![key] }
    }

    /// `current` first, `previous` still accepted. Their identities must differ.
    pub fn rotated(current: Psk, previous: Psk) -> Result<Self, PskError> {
        Self::new(vec![current, previous])
    }

    /// The key a client presents.
    pub fn current(&self) -> &Psk {
        &self.keys[0]
    }

    /// The key still accepted while a rotation is under way.
    pub fn previous(&self) -> Option<&Psk> {
        self.keys.get(1)
    }

    /// The exact contents of `psk.txt`.
    pub fn to_file_contents(&self) -> String {
        self.keys
            .iter()
            .map(Psk::to_file_contents)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

/// A validated pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    identity: String,
    key_hex: String,
}

impl Psk {
    /// Parses the contents of `psk.txt`. One trailing newline is tolerated.
    pub fn parse(contents: &str) -> Result<Self, PskError> {
        let line = contents.strip_suffix('\n').unwrap_or(contents);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\n') {
            return Err(PskError::MultipleLines);
        }
        let (identity, key) = line.split_once(':').ok_or(PskError::NoSeparator)?;
        Self::new(identity, key)
    }

    /// Builds a key from its parts, with the same checks as [`Psk::parse`].
    pub fn new(identity: &str, key_hex: &str) -> Result<Self, PskError> {
        if identity.is_empty()
            || identity.len() > MAX_IDENTITY_LEN
            // ':' separates identity and key in psk.txt: one in the identity would make
            // the file it is written to unreadable.
            || identity
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            return Err(PskError::BadIdentity);
        }
        if !key_hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PskError::NotHex);
        }
        match key_hex.len() {
            n if n < MIN_HEX_DIGITS => return Err(PskError::TooShort(n)),
            n if n > MAX_HEX_DIGITS => return Err(PskError::TooLong(n)),
            n if n % 2 == 1 => return Err(PskError::OddLength),
            _ => {}
        }
        Ok(Self {
            identity: identity.to_owned(),
            key_hex: key_hex.to_ascii_lowercase(),
        })
    }

    /// A fresh key from the OS CSPRNG: `volsync:` and 64 random bytes in hex.
    pub fn generate() -> Self {
        let mut bytes = [0u8; GENERATED_KEY_BYTES];
        rand::rng().fill(&mut bytes[..]);
        Self {
            identity: DEFAULT_IDENTITY.to_owned(),
            key_hex: hex::encode(bytes),
        }
    }

    /// The identity half.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The key in lowercase hex. Handle with care: never log it.
    pub fn key_hex(&self) -> &str {
        &self.key_hex
    }

    /// The key's strength in bits.
    pub fn bits(&self) -> usize {
        self.key_hex.len() * 4
    }

    /// The exact contents of `psk.txt`.
    pub fn to_file_contents(&self) -> String {
        format!("{}:{}", self.identity, self.key_hex)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psk")
            .field("identity", &self.identity)
            .field("key", &format_args!("<{} bits redacted>", self.bits()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY32: &str = "23b7395fafc3e842bd8ac0fe142e6ad1";

    #[test]
    fn accepts_the_spec_example() {
        let psk = Psk::parse(&format!("1:{KEY32}\n")).expect("valid");
        assert_eq!(psk.identity(), "1");
        assert_eq!(psk.bits(), 128);
        assert_eq!(psk.to_file_contents(), format!("1:{KEY32}"));
    }

    #[test]
    fn rejects_each_malformation_without_echoing_the_key() {
        let cases = [
            (KEY32.to_string(), PskError::NoSeparator),
            (format!(":{KEY32}"), PskError::BadIdentity),
            (format!("a b:{KEY32}"), PskError::BadIdentity),
            (format!("id:{}", &KEY32[..30]), PskError::TooShort(30)),
            (format!("id:{KEY32}zz"), PskError::NotHex),
            (format!("id:{KEY32}a"), PskError::OddLength),
            (format!("id:{}", "ab".repeat(513)), PskError::TooLong(1026)),
            (format!("id:{KEY32}\nid:{KEY32}"), PskError::MultipleLines),
        ];
        for (input, want) in cases {
            let err = Psk::parse(&input).expect_err(&input);
            assert_eq!(err, want, "{input}");
            assert!(!err.to_string().contains(&KEY32[..16]), "{err}");
        }
    }

    #[test]
    fn generated_keys_are_valid_distinct_and_512_bits() {
        let (a, b) = (Psk::generate(), Psk::generate());
        assert_ne!(a, b);
        assert_eq!(a.bits(), 512);
        assert_eq!(Psk::parse(&a.to_file_contents()).expect("round-trips"), a);
    }

    /// Issue 14: an identity holding ':' was accepted, and the `psk.txt` written from it
    /// no longer parsed (split at the first ':', the rest is not hex).
    #[test]
    fn every_accepted_key_round_trips_through_its_file() {
        for identity in ["a:b", "volsync:", ":x", "ns/db:v2"] {
            assert_eq!(
                Psk::new(identity, KEY32).map(|p| p.identity().to_owned()),
                Err(PskError::BadIdentity),
                "{identity:?}"
            );
        }
        for identity in ["volsync", "ferrosync.v2", "db-eu-us/7", "1"] {
            let psk = Psk::new(identity, KEY32).expect(identity);
            assert_eq!(Psk::parse(&psk.to_file_contents()), Ok(psk), "{identity:?}");
        }
    }

    #[test]
    fn a_ring_holds_the_current_and_the_previous_key() {
        let old = Psk::parse(&format!("ferrosync:{KEY32}")).unwrap();
        let new = Psk::new("ferrosync.v2", &"cd".repeat(16)).unwrap();
        let ring = KeyRing::rotated(new.clone(), old.clone()).expect("distinct identities");
        let text = ring.to_file_contents();
        assert_eq!(text.lines().count(), 2);
        let back = KeyRing::parse(&format!("{text}\n")).expect("round-trips");
        assert_eq!((back.current(), back.previous()), (&new, Some(&old)));
        assert_eq!(
            KeyRing::parse(&old.to_file_contents()).unwrap().previous(),
            None
        );
        assert_eq!(
            KeyRing::rotated(old.clone(), old.clone()),
            Err(PskError::DuplicateIdentity)
        );
        let three = format!("{text}\nthird:{KEY32}");
        assert_eq!(KeyRing::parse(&three), Err(PskError::TooManyKeys(3)));
        assert!(!format!("{ring:?}").contains(KEY32));
    }

    #[test]
    fn debug_redacts_the_key() {
        let psk = Psk::parse(&format!("id:{KEY32}")).expect("valid");
        let shown = format!("{psk:?}");
        assert!(!shown.contains(KEY32), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}

//! `uuid` values in Postgres' text form: 32 hexadecimal digits, lowercase, hyphenated 8-4-4-4-12.
//! Input takes what Postgres' `uuid_in` takes: upper or lower case, optional braces around the
//! whole, and a hyphen after any group of four digits (`A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11`).

/// `text` as a `uuid` in Postgres' form, or `None` where Postgres' input refuses it.
pub fn parse(text: &str) -> Option<String> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut digits = String::with_capacity(32);
    let mut since_hyphen = 0;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            // A hyphen only after a group of four digits, never first, last or doubled.
            if since_hyphen == 0 || since_hyphen % 4 != 0 || chars.peek().is_none() {
                return None;
            }
            since_hyphen = 0;
            continue;
        }
        if !c.is_ascii_hexdigit() || digits.len() == 32 {
            return None;
        }
        digits.push(c.to_ascii_lowercase());
        since_hyphen += 1;
    }
    if digits.len() != 32 {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    ))
}

/// A `uuid` in Postgres' form as its 16 bytes (its binary wire form); `None` for other text.
pub fn bytes(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// 16 bytes (a `uuid`'s binary wire form) in Postgres' text form.
pub fn from_bytes(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 16 {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parse(&hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postgres 18's `uuid_in`.
    #[test]
    fn takes_what_postgres_takes() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for input in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(parse(input).as_deref(), Some(canonical), "{input}");
        }
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let b = bytes(canonical).expect("bytes");
        assert_eq!(b[0], 0xa0);
        assert_eq!(from_bytes(&b).as_deref(), Some(canonical));
    }
}

//! Personal data recognised by its form: e-mail addresses, payment card
//! numbers, and national identifiers whose format can be checked (a
//! checksum or allocation rules), so that an arbitrary number of the right
//! length is not taken for one.

use std::sync::OnceLock;

use regex::{Match, Regex};

use crate::strategy::Kind;
use crate::Finding;

pub(crate) struct Patterns {
    email: Regex,
    digit_groups: Regex,
    ssn: Regex,
    uk_nino: Regex,
    es_dni: Regex,
    de_tax_id: Regex,
}

pub(crate) fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let compile = |re: &str| Regex::new(re).expect("built-in personal data pattern compiles");
        Patterns {
            // A dotted domain ending in an alphabetic top-level label: `user@localhost`
            // and `package@1.2.3` are not addresses.
            email: compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b"),
            // Groups of digits joined by single spaces or dashes; card numbers
            // are looked for among consecutive groups (see `find_cards`).
            digit_groups: compile(r"\b[0-9]+(?:[ -][0-9]+)*\b"),
            ssn: compile(r"\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b"),
            uk_nino: compile(r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"),
            es_dni: compile(r"\b([XYZ]?)([0-9]{7,8})-?([A-Z])\b"),
            de_tax_id: compile(r"\b[1-9][0-9] ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}\b"),
        }
    })
}

/// The patterns [`find`] searches free text with, as source.
pub(crate) fn text_patterns() -> Vec<&'static str> {
    let p = patterns();
    vec![p.email.as_str(), p.digit_groups.as_str(), p.ssn.as_str(), p.uk_nino.as_str(), p.es_dni.as_str(), p.de_tax_id.as_str()]
}

/// Personal data in free text, in order of precedence.
pub(crate) fn find(text: &str, out: &mut Vec<Finding>) {
    let p = patterns();
    for m in p.email.find_iter(text) {
        if !is_scp_target(text, &m) {
            out.push(Finding { range: m.range(), kind: Kind::Email });
        }
    }
    for run in p.digit_groups.find_iter(text) {
        find_cards(run.as_str(), run.start(), out);
    }
    for caps in p.ssn.captures_iter(text) {
        let (Some(whole), Some(area), Some(group), Some(serial)) = (caps.get(0), caps.get(1), caps.get(2), caps.get(3)) else { continue };
        if !inside_longer_number(text, &whole) && is_ssn(area.as_str(), group.as_str(), serial.as_str()) {
            out.push(Finding { range: whole.range(), kind: Kind::Ssn });
        }
    }
    for caps in p.uk_nino.captures_iter(text) {
        let (Some(whole), Some(prefix)) = (caps.get(0), caps.get(1)) else { continue };
        if !NINO_UNALLOCATED_PREFIXES.contains(&prefix.as_str()) {
            out.push(Finding { range: whole.range(), kind: Kind::UkNino });
        }
    }
    for caps in p.es_dni.captures_iter(text) {
        let (Some(whole), Some(prefix), Some(digits), Some(letter)) = (caps.get(0), caps.get(1), caps.get(2), caps.get(3)) else { continue };
        if is_es_dni(prefix.as_str(), digits.as_str(), letter.as_str()) {
            out.push(Finding { range: whole.range(), kind: Kind::EsDni });
        }
    }
    for m in p.de_tax_id.find_iter(text) {
        if !inside_longer_number(text, &m) && is_de_tax_id(m.as_str()) {
            out.push(Finding { range: m.range(), kind: Kind::DeTaxId });
        }
    }
}

/// `git@github.com:org/repo`: an SSH destination, not a mailbox.
fn is_scp_target(text: &str, m: &Match) -> bool {
    text[m.end()..].starts_with(':')
}

/// A dash and more digits on either side: part of a longer number (a phone
/// number, a dashed reference), not a number of its own.
fn inside_longer_number(text: &str, m: &Match) -> bool {
    dash_then_digit(text[..m.start()].chars().rev()) || dash_then_digit(text[m.end()..].chars())
}

fn dash_then_digit(mut chars: impl Iterator<Item = char>) -> bool {
    matches!((chars.next(), chars.next()), (Some('-'), Some(c)) if c.is_ascii_digit())
}

/// Card numbers in a run of digit groups (`4111 1111 1111 1111 123-45-6789`):
/// the longest consecutive groups, from the leftmost, that hold 13 to 19
/// digits, start as the major networks' numbers do (2 to 6) and pass Luhn.
/// Whole groups only: a longer unbroken number is never taken apart.
fn find_cards(run: &str, offset: usize, out: &mut Vec<Finding>) {
    let mut groups = Vec::new();
    let mut start = 0;
    for (i, c) in run.char_indices() {
        if c == ' ' || c == '-' {
            groups.push(start..i);
            start = i + 1;
        }
    }
    groups.push(start..run.len());
    let mut first = 0;
    while first < groups.len() {
        let starts_as_card = run[groups[first].clone()].starts_with(['2', '3', '4', '5', '6']);
        let card_end = if starts_as_card {
            (first..groups.len()).rev().find(|&last| is_card_number(&run[groups[first].start..groups[last].end]))
        } else {
            None
        };
        match card_end {
            Some(last) => {
                out.push(Finding { range: offset + groups[first].start..offset + groups[last].end, kind: Kind::CardNumber });
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// 13 to 19 digits whose Luhn checksum holds.
pub(crate) fn is_card_number(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

/// Areas 000, 666 and 900–999, group 00 and serial 0000 are never issued.
fn is_ssn(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Prefixes HMRC does not allocate (besides the letters the pattern excludes).
const NINO_UNALLOCATED_PREFIXES: &[&str] = &["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

/// The control letter of a DNI (8 digits) or NIE (X, Y or Z and 7 digits,
/// the letter standing for 0, 1 or 2): the number modulo 23 in this table.
fn is_es_dni(prefix: &str, digits: &str, letter: &str) -> bool {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let prefix_value = match (prefix, digits.len()) {
        ("", 8) => "",
        ("X", 7) => "0",
        ("Y", 7) => "1",
        ("Z", 7) => "2",
        _ => return false,
    };
    let Ok(number) = format!("{prefix_value}{digits}").parse::<u32>() else { return false };
    letter.as_bytes() == [LETTERS[(number % 23) as usize]]
}

/// The German tax id (Steuerliche Identifikationsnummer): 11 digits, the
/// first not 0; in the first ten exactly one digit occurs twice or three
/// times (never three in a row) and each other at most once; the eleventh is
/// the ISO 7064 MOD 11,10 check digit of the first ten.
pub(crate) fn is_de_tax_id(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 11 || digits[0] == 0 {
        return false;
    }
    let body = &digits[..10];
    let mut counts = [0usize; 10];
    for &d in body {
        counts[d as usize] += 1;
    }
    let repeated: Vec<usize> = counts.iter().copied().filter(|&c| c > 1).collect();
    if repeated.len() != 1 || repeated[0] > 3 {
        return false;
    }
    if body.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
        return false;
    }
    let mut product = 10;
    for &d in body {
        let mut sum = (d + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = match 11 - product {
        10 => 0,
        c => c,
    };
    digits[10] == check
}

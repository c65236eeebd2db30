//! Text a plugin hands back (a decision's reason, its error, its panic message, a URL it
//! asked for) on its way to logs, Events and status: cleaned of what would garble or
//! disguise it, and bounded in size.
//!
//! Control characters garble a line; Unicode format characters disguise one: a
//! right-to-left override (U+202E) makes `exe.txt` read as `txt.exe`, a zero-width space
//! (U+200B) makes two different texts look the same, the bidi isolates and embeddings
//! reorder what `kubectl describe` shows. None of them belong in a message for people, so
//! this never lets one through, whatever the plugin writes.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Longest guest text kept; longer text is cut at a character boundary and marked.
pub const MAX_GUEST_TEXT_BYTES: usize = 1024;

/// What a character of guest text becomes.
enum Cleaned {
    Keep(char),
    Space,
    Drop,
}

fn clean_char(c: char) -> Cleaned {
    match c.general_category() {
        // Line breaks, tabs, escapes, and the Unicode line and paragraph separators would
        // break a log line or an Event's one-line message; any other space is shown as a
        // plain one, so two reasons that look alike are alike.
        GeneralCategory::Control
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator
        | GeneralCategory::SpaceSeparator => Cleaned::Space,
        // Invisible by design: direction overrides, embeddings and isolates, zero-width
        // spaces and joiners, the byte order mark, tag characters. Private-use and
        // unassigned code points have no meaning a reader could rely on.
        GeneralCategory::Format
        | GeneralCategory::Surrogate
        | GeneralCategory::PrivateUse
        | GeneralCategory::Unassigned => Cleaned::Drop,
        _ => Cleaned::Keep(c),
    }
}

/// `text` without control, format, private-use or unassigned characters: each control or
/// separator becomes a space, each invisible character is removed.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match clean_char(c) {
            Cleaned::Keep(c) => Some(c),
            Cleaned::Space => Some(' '),
            Cleaned::Drop => None,
        })
        .collect()
}

/// `text` cut to at most [`MAX_GUEST_TEXT_BYTES`] (at a character boundary, marked as
/// truncated), then cleaned.
pub fn bounded(mut text: String) -> String {
    let truncated = text.len() > MAX_GUEST_TEXT_BYTES;
    if truncated {
        let mut cut = MAX_GUEST_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut out = clean(&text);
    if truncated {
        out.push_str("… (truncated)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_and_zero_width_characters_are_removed() {
        // RLO, LRO, PDF, the isolates, ALM, LRM/RLM, ZWSP, ZWJ, ZWNJ, word joiner, BOM,
        // soft hyphen, and a tag character.
        let hostile = "ok\u{202E}txt.exe\u{202D}\u{202C}\u{2066}\u{2067}\u{2068}\u{2069}\
                       \u{061C}\u{200E}\u{200F}a\u{200B}b\u{200D}\u{200C}\u{2060}\u{FEFF}\
                       \u{00AD}\u{E0041}\u{E000}end";
        assert_eq!(clean(hostile), "oktxt.exeabend");
    }

    #[test]
    fn controls_and_separators_become_spaces() {
        assert_eq!(
            clean("a\nb\rc\td\u{1b}[31me\u{2028}f\u{2029}g\u{85}h\u{A0}i\u{3000}j"),
            "a b c d [31me f g h i j"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let s = "Snapshot instead of Clone: driver ebs.csi.aws.com (gp3 → ebs-snapclass) é 日本 🙂";
        assert_eq!(clean(s), s);
    }

    #[test]
    fn bounded_cuts_at_a_character_boundary_then_cleans() {
        let long = "é".repeat(MAX_GUEST_TEXT_BYTES);
        let t = bounded(long);
        assert!(t.len() <= MAX_GUEST_TEXT_BYTES + 20, "{}", t.len());
        assert!(t.ends_with("(truncated)"));
        assert_eq!(bounded("short\u{202E}".into()), "short");
        // A format character right at the cut is still removed.
        let mut edge = "x".repeat(MAX_GUEST_TEXT_BYTES - 3);
        edge.push('\u{202E}');
        edge.push_str("tail");
        assert!(!bounded(edge).contains('\u{202E}'));
    }
}

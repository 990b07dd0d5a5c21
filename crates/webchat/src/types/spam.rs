//! The spam score of a visitor message: a number from 0 (nothing odd) to
//! 100, put into the `webchat.message.received` signal so that rules can
//! act on it (hold, skip the notification, close). Nothing is dropped on
//! its account: the message is stored and signalled either way.
//!
//! The heuristics are deliberately simple and cheap:
//! - links: two or more links are unusual in a support chat;
//! - repetition inside the message: long runs of one character, or a few
//!   words said over and over;
//! - repetition across messages: the same text already seen on the site
//!   recently (counted by the caller, which keeps the recent texts).

/// Links in `text`: `http://`, `https://` and `www.` occurrences.
fn links(text: &str) -> usize {
    let lower = text.to_ascii_lowercase();
    lower.matches("http://").count()
        + lower.matches("https://").count()
        + lower
            .match_indices("www.")
            .filter(|(i, _)| !lower[..*i].ends_with("://"))
            .count()
}

/// Whether the message repeats itself: a run of 20 or more of one
/// character, or 12+ words of which fewer than a third are distinct.
fn self_repeating(text: &str) -> bool {
    let mut run = 0;
    let mut last = None;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        run = if Some(c) == last { run + 1 } else { 1 };
        last = Some(c);
        if run >= 20 {
            return true;
        }
    }
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.len() >= 12 {
        let distinct: std::collections::HashSet<&String> = words.iter().collect();
        return distinct.len() * 3 < words.len();
    }
    false
}

/// The score of `text`, which was seen `repeats` times before on the same
/// site recently.
pub fn score(text: &str, repeats: u32) -> u8 {
    let mut s: u32 = match links(text) {
        0 | 1 => 0,
        n => (20 + 15 * (n as u32 - 2)).min(60),
    };
    if self_repeating(text) {
        s += 20;
    }
    s += match repeats {
        0 => 0,
        1 | 2 => 30,
        _ => 50,
    };
    s.min(100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_question_scores_zero() {
        assert_eq!(
            score(
                "Hi, where is my order #1234? See https://shop.example/o/1",
                0
            ),
            0
        );
    }

    #[test]
    fn links_and_repetition_raise_the_score() {
        let two = "see https://a.example and www.b.example";
        assert_eq!(links(two), 2);
        assert_eq!(score(two, 0), 20);
        let many = "http://a.x http://b.x https://c.x www.d.x http://www.e.x";
        assert_eq!(links(many), 5);
        assert_eq!(score(many, 0), 60);
        assert_eq!(
            score("buy now buy now buy now buy now buy now buy now", 0),
            20
        );
        assert_eq!(score("!!!!!!!!!!!!!!!!!!!!!!!!", 0), 20);
        assert_eq!(score("hello", 1), 30);
        assert_eq!(score("hello", 5), 50);
        assert_eq!(score(many, 5), 100);
    }
}

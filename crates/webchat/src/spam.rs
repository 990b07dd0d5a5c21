//! The spam score of a visitor message ([`crate::types::spam`])
//! with its one input that needs memory: how often the same text reached
//! the site lately, counted here, in this process (ten-minute windows).
//! A score informs rules; it never stops a message.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{LazyLock, Mutex};

use crate::types::id::SiteId;
use fleetprompt_core::time::Millis;

const WINDOW_MS: Millis = 600_000;
/// Past this many remembered texts, expired ones are dropped.
const PRUNE_AT: usize = 50_000;

/// Per (site, hash of the normalised text): window start and count. The
/// text itself is not kept.
type Seen = HashMap<(SiteId, u64), (Millis, u32)>;

// A std mutex: held for a map lookup only, never across an await.
static SEEN: LazyLock<Mutex<Seen>> = LazyLock::new(Default::default);

/// Counts `content` for `site` and returns how many times it was seen
/// before in the window. Case and spacing do not make a text new.
fn repeats(site: SiteId, content: &str, now: Millis) -> u32 {
    let mut h = DefaultHasher::new();
    for word in content.split_whitespace() {
        word.to_lowercase().hash(&mut h);
    }
    let mut map = SEEN.lock().expect("spam lock");
    if map.len() > PRUNE_AT {
        map.retain(|_, (start, _)| now - *start < WINDOW_MS);
    }
    let e = map.entry((site, h.finish())).or_insert((now, 0));
    if now - e.0 >= WINDOW_MS {
        *e = (now, 0);
    }
    e.1 = e.1.saturating_add(1);
    e.1 - 1
}

/// The spam score of a message `content` arriving on `site` now.
pub fn score(site: SiteId, content: &str, now: Millis) -> u8 {
    crate::types::spam::score(content, repeats(site, content, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_again_counts_as_a_repeat_per_site() {
        let (a, b) = (SiteId::new(), SiteId::new());
        assert_eq!(repeats(a, "Buy  NOW", 0), 0);
        assert_eq!(repeats(a, "buy now", 1), 1);
        assert_eq!(repeats(b, "buy now", 1), 0);
        assert_eq!(repeats(a, "buy now", WINDOW_MS + 1), 0);
    }
}

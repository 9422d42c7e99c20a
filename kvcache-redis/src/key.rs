//! The Redis key of each (container, key), and the SCAN pattern of each container.
//!
//! The layout is `PREFIX:{LEN:CONTAINER}:KEY`, where `LEN` is the container name's length in
//! bytes. Reading a key from the left, the prefix is fixed per backend, `LEN` says exactly where
//! the container ends, and the rest is the key: no two (container, key) pairs share a Redis key,
//! whatever `:`, `{`, `}` or digits their names hold.
//!
//! The braces are a Redis Cluster hash tag: the slot of a key is computed from `LEN:CONTAINER`
//! alone (up to the first `}`, which is the container's own or ours), so every key of one
//! container lives in one slot.

use std::fmt::Write;

/// Builds the Redis keys of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix`, which holds no `{` or `}` (the configuration checks it).
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of `container`: its start and its `SCAN` pattern, computed once.
    pub(crate) fn container(&self, container: &str) -> ContainerKeys {
        let mut start = String::with_capacity(self.prefix.len() + 25 + container.len());
        write!(
            start,
            "{}:{{{}:{container}}}:",
            self.prefix,
            container.len()
        )
        .expect("writing to a String cannot fail");
        let mut pattern = String::with_capacity(start.len() + 8);
        for c in start.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        ContainerKeys { start, pattern }
    }

    /// The Redis key of `key` in `container`.
    #[cfg(test)]
    pub(crate) fn entry(&self, container: &str, key: &str) -> String {
        self.container(container).entry(key)
    }

    /// A glob pattern (`SCAN ... MATCH`) that matches every key of `container` and no other.
    #[cfg(test)]
    pub(crate) fn pattern(&self, container: &str) -> String {
        self.container(container).pattern().to_owned()
    }
}

/// The Redis keys of one container of one backend.
#[derive(Debug, Clone)]
pub(crate) struct ContainerKeys {
    /// `PREFIX:{LEN:CONTAINER}:`, the start of every key of the container.
    start: String,
    /// `start`, its glob characters escaped, then `*`.
    pattern: String,
}

impl ContainerKeys {
    /// The Redis key of `key`, built in one allocation.
    pub(crate) fn entry(&self, key: &str) -> String {
        let mut entry = String::with_capacity(self.start.len() + key.len());
        entry.push_str(&self.start);
        entry.push_str(key);
        entry
    }

    /// A glob pattern (`SCAN ... MATCH`) that matches every key of the container and no other.
    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Keys;

    /// Every string of up to `max` characters drawn from `alphabet`.
    fn strings(alphabet: &[char], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_layout_is_prefix_tagged_container_key() {
        let keys = Keys::new("kvcache");
        assert_eq!(
            keys.entry("greeting", "Peter"),
            "kvcache:{8:greeting}:Peter"
        );
        assert_eq!(keys.entry("a:b", ""), "kvcache:{3:a:b}:");
        assert_eq!(
            keys.entry("ünï", "k"),
            "kvcache:{5:ünï}:k",
            "the length is in bytes"
        );
    }

    #[test]
    fn no_two_pairs_share_a_key() {
        // Every pair of names of up to 4 characters drawn from the characters that could
        // confuse the layout: separators, braces and digits that mimic the length.
        let names = strings(&[':', '{', '}', '1', '2'], 4);
        let keys = Keys::new("p");
        let mut seen = HashSet::new();
        for container in &names {
            for key in &names {
                assert!(
                    seen.insert(keys.entry(container, key)),
                    "({container:?}, {key:?}) collides"
                );
            }
        }
    }

    /// Redis's glob matching (`stringmatchlen`) for the subset `pattern` produces: `\x`, `*`.
    fn matches(pattern: &str, text: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p {
                [] => t.is_empty(),
                ['*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
                ['\\', c, rest @ ..] | [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
            }
        }
        let pattern: Vec<char> = pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        go(&pattern, &text)
    }

    #[test]
    fn a_containers_keys_are_the_backends() {
        let keys = Keys::new("p");
        let container = keys.container("a:b");
        assert_eq!(container.entry("k"), keys.entry("a:b", "k"));
        assert_eq!(container.entry("k"), "p:{3:a:b}:k");
        assert_eq!(container.pattern(), "p:{3:a:b}:*");
    }

    #[test]
    fn a_pattern_matches_its_containers_keys_only() {
        let names = strings(&[':', '{', '}', '*', '?', '[', '\\', '1'], 2);
        let keys = Keys::new("p*");
        for container in &names {
            let pattern = keys.pattern(container);
            for other in &names {
                for key in ["", "k", "*", ":{1:a}:"] {
                    assert_eq!(
                        matches(&pattern, &keys.entry(other, key)),
                        container == other,
                        "pattern of {container:?} against ({other:?}, {key:?})"
                    );
                }
            }
        }
    }
}

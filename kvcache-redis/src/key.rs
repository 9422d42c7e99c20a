//! The Redis key of each (container, key), of the lease on generating it, and the SCAN pattern
//! of each container.
//!
//! The layout is `PREFIX:{LEN:CONTAINER}:KEY`, where `LEN` is the container name's length in
//! bytes. Reading a key from the left, the prefix is fixed per backend, `LEN` says exactly where
//! the container ends, and the rest is the key: no two (container, key) pairs share a Redis key,
//! whatever `:`, `{`, `}` or digits their names hold.
//!
//! The lease on generating (container, key) ([`kvcache_core::Store::lease`]) is the Redis key
//! `PREFIX:{LEN:CONTAINER}!lease:KEY`: the entry's layout with `!lease:` where the entry has `:`
//! after the container's `}`. Read from the left as an entry is, `LEN` ends the container at the
//! same place, and what follows it is `}:` in every entry key and `}!` in every lease key, so a
//! lease key is never an entry key, two leases never share a key, and a container's `SCAN`
//! pattern (`PREFIX:{LEN:CONTAINER}:*`), which `clear` and the `kvcache` command's walks use,
//! matches no lease key, of its own container or another's. The backend's `PREFIX:{*` does match
//! them, and the walk that lists containers reads each key's container back only when `}:` follows
//! it, so leases add no container and break no listing.
//!
//! The braces are a Redis Cluster hash tag: the slot of a key is computed from `LEN:CONTAINER`
//! alone (up to the first `}`, which is the container's own or ours), so every key of one
//! container lives in one slot, its leases included: the lease key starts as its entry key does,
//! up to and including that `}`.
//!
//! The backend's invalidation channel (pub/sub, [`kvcache_core::Backend::watch`]) is
//! `PREFIX!changes`: one channel per prefix, named apart from every key (and pub/sub channels
//! are no keys: no `SCAN` sees them).

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

    /// The pub/sub channel of the backend's changes: `PREFIX!changes`.
    pub(crate) fn channel(&self) -> String {
        format!("{}!changes", self.prefix)
    }

    /// The keys of `container`: its start, its leases' start and its `SCAN` pattern, computed
    /// once.
    pub(crate) fn container(&self, container: &str) -> ContainerKeys {
        let mut tagged = String::with_capacity(self.prefix.len() + 25 + container.len());
        write!(
            tagged,
            "{}:{{{}:{container}}}",
            self.prefix,
            container.len()
        )
        .expect("writing to a String cannot fail");
        let lease = format!("{tagged}{LEASE}");
        let mut start = tagged;
        start.push(':');
        let mut pattern = String::with_capacity(start.len() + 8);
        for c in start.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        ContainerKeys {
            start,
            lease,
            pattern,
        }
    }

    /// The Redis key of `key` in `container`.
    #[cfg(test)]
    pub(crate) fn entry(&self, container: &str, key: &str) -> String {
        self.container(container).entry(key)
    }

    /// The Redis key of the lease on `key` in `container`.
    #[cfg(test)]
    pub(crate) fn lease(&self, container: &str, key: &str) -> String {
        self.container(container).lease(key)
    }

    /// A glob pattern (`SCAN ... MATCH`) that matches every key of `container` and no other.
    #[cfg(test)]
    pub(crate) fn pattern(&self, container: &str) -> String {
        self.container(container).pattern().to_owned()
    }
}

/// What follows a container's `}` in its lease keys, where its entry keys have `:`.
const LEASE: &str = "!lease:";

/// The Redis keys of one container of one backend.
#[derive(Debug, Clone)]
pub(crate) struct ContainerKeys {
    /// `PREFIX:{LEN:CONTAINER}:`, the start of every key of the container.
    start: String,
    /// `PREFIX:{LEN:CONTAINER}!lease:`, the start of every lease key of the container.
    lease: String,
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

    /// The Redis key of the lease on generating `key`, built in one allocation.
    pub(crate) fn lease(&self, key: &str) -> String {
        let mut lease = String::with_capacity(self.lease.len() + key.len());
        lease.push_str(&self.lease);
        lease.push_str(key);
        lease
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
        assert_eq!(
            keys.lease("greeting", "Peter"),
            "kvcache:{8:greeting}!lease:Peter"
        );
        assert_eq!(keys.lease("a:b", ""), "kvcache:{3:a:b}!lease:");
        assert_eq!(keys.channel(), "kvcache!changes");
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

    #[test]
    fn no_lease_shares_a_key_with_an_entry_or_another_lease() {
        // `!` and `lease` too: names that mimic the lease layout.
        let mut names = strings(&[':', '{', '}', '!', '1', '2'], 3);
        names.extend(["lease", "!lease", "!lease:", "}!lease:", "1:a}!lease:"].map(String::from));
        let keys = Keys::new("p");
        let mut seen = HashSet::new();
        for container in &names {
            for key in &names {
                assert!(
                    seen.insert(keys.entry(container, key)),
                    "({container:?}, {key:?}) collides"
                );
                assert!(
                    seen.insert(keys.lease(container, key)),
                    "the lease on ({container:?}, {key:?}) collides"
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
        assert_eq!(container.lease("k"), keys.lease("a:b", "k"));
        assert_eq!(container.lease("k"), "p:{3:a:b}!lease:k");
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

    #[test]
    fn no_pattern_matches_a_lease() {
        let names = strings(&[':', '{', '}', '*', '?', '[', '\\', '!', '1'], 2);
        let keys = Keys::new("p*");
        for container in &names {
            let pattern = keys.pattern(container);
            for other in &names {
                for key in ["", "k", "*", ":{1:a}:", "!lease:k"] {
                    let lease = keys.lease(other, key);
                    assert!(
                        !matches(&pattern, &lease),
                        "pattern of {container:?} matches the lease {lease:?}"
                    );
                }
            }
        }
    }

    /// Redis Cluster's hash tag of `key` (`keyHashSlot`): what is between the first `{` and the
    /// first `}` after it, when that is not empty; else the whole key.
    fn hash_tag(key: &str) -> &str {
        let Some(open) = key.find('{') else {
            return key;
        };
        match key[open + 1..].find('}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        }
    }

    #[test]
    fn a_lease_is_in_its_containers_slot() {
        assert_eq!(hash_tag("p:{3:a:b}:k"), "3:a:b");
        assert_eq!(
            hash_tag("p:{3:a}b}:k"),
            "3:a",
            "the first `}}` ends the tag"
        );
        let names = strings(&[':', '{', '}', '!', '1'], 3);
        let keys = Keys::new("p");
        for container in &names {
            let tag = hash_tag(&keys.entry(container, "k")).to_owned();
            assert!(tag.len() > 1, "{container:?} has a tag of its own: {tag:?}");
            for key in &names {
                assert_eq!(
                    hash_tag(&keys.lease(container, key)),
                    tag,
                    "the lease on ({container:?}, {key:?})"
                );
                assert_eq!(hash_tag(&keys.entry(container, key)), tag);
            }
        }
    }
}

//! The host ids of root-started cells: the range each running cell takes one id from.
//!
//! Only root in the initial user namespace can map a cell to another host id (root in
//! `unshare -Ur` or a rootless container cannot), so the machine offers a range only
//! there (`cell::confine::host_id_range`, part of the [`Offer`](super::Offer)). The range
//! is the one an administrator reserved for the system user [`USER`] in `/etc/subuid` and
//! `/etc/subgid` (the same ids in both; a line `taskcell:START:COUNT`), else taskcell's
//! own [`IdRange::DEFAULT`]. Pure: the probe reads the files, this decides.

use serde::Serialize;

/// The system user whose `/etc/subuid` and `/etc/subgid` entries reserve the range.
pub const USER: &str = "taskcell";

/// The lowest id a reserved range may hold: above every ordinary user and group (and
/// `nobody`, 65534), so a cell never runs as an account of the machine.
pub const MIN_ID: u32 = 65536;

/// A range of host uids/gids for root-started cells (`[start, start+count)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

impl IdRange {
    /// taskcell's range when none is reserved: 65536 ids at 0x6A5C0000 (1784414208), far
    /// above the ranges useradd, systemd (DynamicUser 61184-65519, nspawn 0x80000-
    /// 0x6FFFFFFF is per-container and allocated by systemd-machined) and the usual
    /// /etc/subuid blocks hand out; never 65534.
    pub const DEFAULT: IdRange = IdRange {
        start: 0x6A5C_0000,
        count: 65536,
    };

    /// The last id of the range.
    pub fn last(self) -> u64 {
        u64::from(self.start) + u64::from(self.count) - 1
    }
}

/// The range a root-started cell's host id comes from, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostIdRange {
    pub range: IdRange,
    /// "/etc/subuid and /etc/subgid (user taskcell)", or why the default is used.
    pub from: String,
}

/// The first entry of `user` (by name, or by `uid` when the user exists) in a subuid(5)
/// / subgid(5) text: None when there is none, an error when it does not parse.
pub fn entry(text: &str, user: &str, uid: Option<u32>) -> Option<Result<IdRange, String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split(':');
            let owner = f.next()?;
            let mine = owner == user || uid.is_some_and(|u| owner == u.to_string());
            if !mine {
                return None;
            }
            let (start, count) = (f.next(), f.next());
            Some(
                match (
                    start.and_then(|s| s.parse::<u32>().ok()),
                    count.and_then(|s| s.parse::<u32>().ok()),
                    f.next(),
                ) {
                    (Some(start), Some(count), None) if count > 0 => Ok(IdRange { start, count }),
                    _ => Err(format!("{l:?} is not NAME:START:COUNT")),
                },
            )
        })
}

/// The range from the `/etc/subuid` and `/etc/subgid` texts (None: the file cannot be
/// read) and the uid of [`USER`] if it exists: the ids both files reserve for it, else
/// [`IdRange::DEFAULT`] with the reason in `from`.
pub fn reserved(subuid: Option<&str>, subgid: Option<&str>, uid: Option<u32>) -> HostIdRange {
    let default = |why: String| HostIdRange {
        range: IdRange::DEFAULT,
        from: format!("taskcell's default range ({why})"),
    };
    let find = |text: Option<&str>| text.and_then(|t| entry(t, USER, uid));
    let (u, g) = match (find(subuid), find(subgid)) {
        (None, None) => {
            return default(format!("no `{USER}` entry in /etc/subuid and /etc/subgid"))
        }
        (Some(Err(e)), _) => return default(format!("/etc/subuid: {e}")),
        (_, Some(Err(e))) => return default(format!("/etc/subgid: {e}")),
        (Some(Ok(u)), Some(Ok(g))) => (u, g),
        (Some(_), None) => return default(format!("`{USER}` has no entry in /etc/subgid")),
        (None, Some(_)) => return default(format!("`{USER}` has no entry in /etc/subuid")),
    };
    // A cell's uid and gid are the same number: the ids both files reserve.
    let start = u.start.max(g.start);
    let end = u.last().min(g.last());
    if u64::from(start) > end {
        return default(format!(
            "the `{USER}` ranges of /etc/subuid and /etc/subgid do not overlap"
        ));
    }
    if start < MIN_ID || end >= u64::from(u32::MAX) {
        return default(format!(
            "the `{USER}` range {start}..{end} must lie within {MIN_ID}..{}",
            u32::MAX - 1
        ));
    }
    HostIdRange {
        range: IdRange {
            start,
            count: (end - u64::from(start) + 1) as u32,
        },
        from: format!("/etc/subuid and /etc/subgid (user {USER})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHERS: &str = "taskcell-ci:100000:65536\ntaskcell-bench:165536:65536\n";

    #[test]
    fn the_taskcell_entry_of_both_files_is_the_range() {
        let sub = format!("{OTHERS}taskcell:300000:1000\ntaskcell:900000:5\n");
        let r = reserved(Some(&sub), Some(&sub), None);
        assert_eq!(
            r.range,
            IdRange {
                start: 300000,
                count: 1000
            }
        );
        assert_eq!(r.from, "/etc/subuid and /etc/subgid (user taskcell)");
        // By uid, as subuid(5) allows; and the overlap of two different entries.
        let u = "998:300000:1000\n";
        let g = "taskcell:300500:1000\n";
        let r = reserved(Some(u), Some(g), Some(998));
        assert_eq!(
            r.range,
            IdRange {
                start: 300500,
                count: 500
            }
        );
        assert_eq!(r.range.last(), 300999);
        // `taskcell-ci` is not `taskcell`; nor is uid 998 when the user has another.
        assert_eq!(
            reserved(Some(u), Some(u), Some(999)).range,
            IdRange::DEFAULT
        );
    }

    #[test]
    fn without_a_usable_entry_the_default_range_says_why() {
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (Some(OTHERS), Some(OTHERS), "no `taskcell` entry"),
            (None, None, "no `taskcell` entry"),
            (
                Some("taskcell:300000:10\n"),
                Some(OTHERS),
                "no entry in /etc/subgid",
            ),
            (
                Some(OTHERS),
                Some("taskcell:300000:10\n"),
                "no entry in /etc/subuid",
            ),
            (
                Some("taskcell:x:10\n"),
                Some("taskcell:1:1\n"),
                "/etc/subuid: ",
            ),
            (Some("taskcell:300000:0\n"), Some(OTHERS), "/etc/subuid: "),
            (Some("taskcell:1:2:3\n"), Some(OTHERS), "/etc/subuid: "),
            (
                Some("taskcell:300000:10\n"),
                Some("taskcell:400000:10\n"),
                "do not overlap",
            ),
            // Over real accounts (root, users, nobody) or the invalid id: never.
            (
                Some("taskcell:0:65536\n"),
                Some("taskcell:0:65536\n"),
                "must lie within",
            ),
            (
                Some("taskcell:1000:10\n"),
                Some("taskcell:1000:10\n"),
                "must lie within",
            ),
            (
                Some("taskcell:4294967295:1\n"),
                Some("taskcell:4294967295:1\n"),
                "must lie within",
            ),
        ];
        for (u, g, why) in cases {
            let r = reserved(*u, *g, None);
            assert_eq!(r.range, IdRange::DEFAULT, "{u:?} {g:?}");
            assert!(
                r.from.starts_with("taskcell's default range ("),
                "{}",
                r.from
            );
            assert!(r.from.contains(why), "{u:?} {g:?}: {}", r.from);
        }
        assert_eq!(IdRange::DEFAULT.last(), 1784479743);
    }
}

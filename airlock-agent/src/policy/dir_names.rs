//! Which of many program names a directory holds. The daemon looks for every
//! program the rules name in every search directory (the session's PATH at
//! launch, the console scripts at load); with thousands of rules, probing each
//! name in each directory costs far more than listing the directory once.
//! Every launch looks at the same few directories again, so what was found in
//! each is kept while the directory is unchanged ([`DirNameCache`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Up to this many names, each is probed with one `lstat`; past it the
/// directory is listed once (a listing of /usr/bin costs about as much).
const PROBE_MAX: usize = 64;

/// The names of `names` that `dir` has an entry for (of any kind: the caller
/// checks what each is), in `names`' order. An unreadable or missing
/// directory has none.
pub fn names_in_dir<'a>(dir: &Path, names: &'a BTreeSet<String>) -> Vec<&'a String> {
    if names.len() <= PROBE_MAX {
        return names.iter().filter(|name| std::fs::symlink_metadata(dir.join(name.as_str())).is_ok()).collect();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let listed: HashSet<OsString> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.iter().filter(|name| listed.contains(std::ffi::OsStr::from_bytes(name.as_bytes()))).collect()
}

/// Directories whose findings are kept; past this the cache starts again.
const MAX_CACHED_DIRS: usize = 256;

/// A finding is kept only when the directory's last change is at least this
/// old when it is looked at. The kernel stamps a change with a coarse clock,
/// so a change made just after the look could carry the very stamp of one made
/// just before it; a change made after a settled look cannot.
const SETTLED: Duration = Duration::from_secs(2);

/// What a directory was found to hold, by the directory's identity (device
/// and inode, as the session's own root and mount namespace show it), kept
/// while its modification and change times are the ones it had then. Adding,
/// removing or renaming an entry changes both, so a program put on a PATH is
/// found at the next launch.
#[derive(Default)]
pub struct DirNameCache {
    /// The names the findings are for; another set of names empties the cache.
    names: BTreeSet<String>,
    by_dir: HashMap<(u64, u64), CachedDir>,
    /// How many times a directory was looked at rather than taken from the cache.
    looked_at: u64,
}

struct CachedDir {
    stamp: [i64; 4],
    found: Vec<String>,
}

impl DirNameCache {
    /// Looks for `names` from now on (once per lookup of many directories, not
    /// per directory): findings made for other names are dropped.
    pub fn look_for(&mut self, names: &BTreeSet<String>) {
        if *names != self.names {
            self.by_dir.clear();
            self.names = names.clone();
        }
    }

    /// [`names_in_dir`] for the names of [`Self::look_for`], from the cache
    /// when `dir` is unchanged since it was looked at.
    pub fn names_in_dir(&mut self, dir: &Path) -> Vec<String> {
        // Followed like the listing follows it: the directory a symlink leads to.
        let Ok(meta) = std::fs::metadata(dir) else {
            return Vec::new();
        };
        let key = (meta.dev(), meta.ino());
        let stamp = [meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()];
        if let Some(cached) = self.by_dir.get(&key).filter(|c| c.stamp == stamp) {
            return cached.found.clone();
        }
        // The stamp is read before the look: a change in between makes the
        // next stamp differ, and the directory is looked at again.
        let looked_at = SystemTime::now();
        self.looked_at += 1;
        let found: Vec<String> = names_in_dir(dir, &self.names).into_iter().cloned().collect();
        let settled = meta.modified().ok().and_then(|m| looked_at.duration_since(m).ok()).is_some_and(|age| age >= SETTLED);
        if settled {
            if self.by_dir.len() >= MAX_CACHED_DIRS {
                self.by_dir.clear();
            }
            self.by_dir.insert(key, CachedDir { stamp, found: found.clone() });
        } else {
            self.by_dir.remove(&key);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_looked_at_again_only_when_it_changed_or_had_just_changed() {
        let dir = std::env::temp_dir().join(format!("airlock-dir-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("terraform"), b"x").expect("write");
        let names: BTreeSet<String> = ["aws", "terraform"].into_iter().map(String::from).collect();
        let mut cache = DirNameCache::default();
        cache.look_for(&names);

        // Just changed: its stamp could be shared by a change still to come.
        assert_eq!(cache.names_in_dir(&dir), vec!["terraform"]);
        assert_eq!(cache.names_in_dir(&dir), vec!["terraform"]);
        assert_eq!(cache.looked_at, 2, "a directory changed within SETTLED is not kept");

        let settle = |dir: &Path| {
            let handle = std::fs::File::open(dir).expect("open the directory");
            let long_ago = SystemTime::now() - 2 * SETTLED;
            handle.set_times(std::fs::FileTimes::new().set_modified(long_ago)).expect("set the directory's mtime");
        };
        settle(&dir);
        assert_eq!(cache.names_in_dir(&dir), vec!["terraform"]);
        assert_eq!(cache.names_in_dir(&dir), vec!["terraform"]);
        assert_eq!(cache.looked_at, 3, "a settled, unchanged directory is looked at once");

        std::fs::write(dir.join("aws"), b"x").expect("write");
        assert_eq!(cache.names_in_dir(&dir), vec!["aws", "terraform"], "a program added is found");
        settle(&dir);
        assert_eq!(cache.names_in_dir(&dir), vec!["aws", "terraform"]);
        std::fs::remove_file(dir.join("terraform")).expect("rm");
        assert_eq!(cache.names_in_dir(&dir), vec!["aws"], "a program removed is gone");
        settle(&dir);
        cache.names_in_dir(&dir);
        let looked = cache.looked_at;
        let fewer: BTreeSet<String> = ["terraform"].into_iter().map(String::from).collect();
        cache.look_for(&fewer);
        assert!(cache.names_in_dir(&dir).is_empty());
        assert_eq!(cache.looked_at, looked + 1, "other names are looked for afresh");
        assert!(cache.names_in_dir(&dir.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn probing_and_listing_find_the_same_names() {
        let dir = std::env::temp_dir().join(format!("airlock-dir-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        for name in ["terraform", "kubectl", "tool7"] {
            std::fs::write(dir.join(name), b"x").expect("write");
        }
        std::os::unix::fs::symlink("/nonexistent/aws", dir.join("aws")).expect("a dangling link is an entry");
        let few: BTreeSet<String> = ["aws", "kubectl", "sub", "terraform", "helm"].into_iter().map(String::from).collect();
        let many: BTreeSet<String> = few.iter().cloned().chain((0..PROBE_MAX).map(|i| format!("tool{i}"))).collect();
        assert!(many.len() > PROBE_MAX);
        assert_eq!(names_in_dir(&dir, &few), vec!["aws", "kubectl", "sub", "terraform"]);
        assert_eq!(names_in_dir(&dir, &many), vec!["aws", "kubectl", "sub", "terraform", "tool7"]);
        assert!(names_in_dir(&dir.join("missing"), &many).is_empty());
        assert!(names_in_dir(&dir.join("missing"), &few).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Which of many program names a directory holds. The daemon looks for every
//! program the rules name in every search directory (the session's PATH at
//! launch, the console scripts at load); with thousands of rules, probing each
//! name in each directory costs far more than listing the directory once.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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

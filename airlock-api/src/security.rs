//! What every holder of a security finding or block shows the same way.

use crate::v1::Measure;

/// "denies 25 >= 20, distinct_hosts 2 < 5": each value against its threshold.
pub fn values_text(values: &[Measure]) -> String {
    values
        .iter()
        .map(|m| format!("{} {} {} {}", m.name, m.observed, if m.observed >= m.threshold { ">=" } else { "<" }, m.threshold))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_is_shown_against_its_threshold() {
        let m = |name: &str, observed, threshold| Measure { name: name.into(), observed, threshold };
        assert_eq!(values_text(&[m("denies", 25, 20), m("distinct_hosts", 2, 5)]), "denies 25 >= 20, distinct_hosts 2 < 5");
        assert_eq!(values_text(&[]), "");
    }
}

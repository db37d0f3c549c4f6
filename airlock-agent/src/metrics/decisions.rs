//! Decisions by kind and verdict: a pipeline sink, so it counts exactly what
//! every other sink received (kernel decisions, the backlog read at start,
//! revocations, loss markers, approval steps), once each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use airlock_api::decision as kinds;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use crate::pipeline::{Record, Sink};

/// The label values of `kind`: the record kinds, and `other` for a kind
/// this build does not know (keeps the label's cardinality fixed).
pub const KINDS: [&str; 13] = [
    kinds::EXEC,
    kinds::CONNECT,
    kinds::SENDMSG,
    kinds::UNIX_CONNECT,
    kinds::UNIX_SENDMSG,
    kinds::TAMPER,
    kinds::FILE_OPEN,
    kinds::TAG_FAILURE,
    kinds::REVOKE,
    kinds::EVENTS_LOST,
    kinds::SHIPPING_LOST,
    kinds::APPROVAL,
    "other",
];

/// The label values of `decision`: a record with no verdict (a loss marker
/// counts decisions, it is not one) is `none`.
pub const VERDICTS: [&str; 4] = [kinds::ALLOW, kinds::DENY, "none", "other"];

#[derive(Debug, Default)]
pub struct DecisionCounts {
    counts: [[AtomicU64; VERDICTS.len()]; KINDS.len()],
}

impl DecisionCounts {
    pub fn count(&self, kind: &str, decision: &str) {
        let k = KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(KINDS.len() - 1);
        let v = match decision {
            "" => 2,
            d => VERDICTS[..2]
                .iter()
                .position(|v| *v == d)
                .unwrap_or(VERDICTS.len() - 1),
        };
        self.counts[k][v].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: &str, decision: &str) -> u64 {
        let (Some(k), Some(v)) = (
            KINDS.iter().position(|k| *k == kind),
            VERDICTS.iter().position(|v| *v == decision),
        ) else {
            return 0;
        };
        self.counts[k][v].load(Ordering::Relaxed)
    }
}

/// The pipeline sink that counts.
pub struct CountingSink(pub Arc<DecisionCounts>);

impl Sink for CountingSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn accept(&mut self, record: &Arc<Record>) -> anyhow::Result<()> {
        self.0
            .count(&record.decision.kind, &record.decision.decision);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `airlock_decisions_total{kind, decision}`: every kind with allow and deny
/// from the start (zero until the first one), so rates work from the first
/// scrape; `none` and `other` once they occur.
#[derive(Debug)]
pub struct Collector(pub Arc<DecisionCounts>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Decisions recorded (audit trail, store, stream, spool), by kind and verdict";
        let mut family = encoder.encode_descriptor("decisions", help, None, MetricType::Counter)?;
        for (k, kind) in KINDS.iter().enumerate() {
            for (v, verdict) in VERDICTS.iter().enumerate() {
                let n = self.0.counts[k][v].load(Ordering::Relaxed);
                if n == 0 && (v >= 2 || *kind == "other") {
                    continue;
                }
                let labels = [("kind", *kind), ("decision", *verdict)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_verdicts_land_in_their_cells_and_unknown_ones_in_other() {
        let c = DecisionCounts::default();
        c.count("exec", "deny");
        c.count("exec", "deny");
        c.count("connect", "allow");
        c.count("events_lost", "");
        c.count("something_new", "maybe");
        assert_eq!(c.get("exec", "deny"), 2);
        assert_eq!(c.get("exec", "allow"), 0);
        assert_eq!(c.get("connect", "allow"), 1);
        assert_eq!(c.get("events_lost", "none"), 1);
        assert_eq!(c.get("other", "other"), 1);
    }
}

//! Decisions stored before the detail of each kind had its own message:
//! their exec fields were top-level fields 23, 24 and 27 of `Decision`
//! (now reserved there, and in `ExecDetail`). A body without a detail is read
//! once more for those fields, so a store written by an older agent answers
//! queries in today's shape.

use airlock_api::decision::EXEC;
use airlock_api::v1::{decision::Detail, Decision, ExecDetail};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct LegacyExecFields {
    #[prost(string, optional, tag = "23")]
    matched_by: Option<String>,
    #[prost(string, optional, tag = "24")]
    stage: Option<String>,
    #[prost(string, optional, tag = "27")]
    filename: Option<String>,
}

/// Fills the exec detail of an old exec decision from its encoded body.
pub fn upgrade(d: &mut Decision, body: &[u8]) {
    if d.detail.is_some() || d.kind != EXEC {
        return;
    }
    let Ok(old) = LegacyExecFields::decode(body) else { return };
    d.detail = Some(Detail::Exec(ExecDetail {
        filename: old.filename.unwrap_or_default(),
        matched_by: old.matched_by,
        stage: old.stage.unwrap_or_default(),
        ..Default::default()
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_exec_body_reads_back_with_its_exec_detail() {
        let old = LegacyExecFields { matched_by: Some("argv0".into()), stage: Some("early".into()), filename: Some("/usr/bin/terraform".into()) };
        let mut body = Decision { kind: EXEC.into(), argv: vec!["terraform".into()], ..Default::default() }.encode_to_vec();
        body.extend(old.encode_to_vec());
        let mut d = Decision::decode(body.as_slice()).expect("an old body decodes");
        assert!(d.detail.is_none(), "the moved fields are unknown to today's message");
        upgrade(&mut d, &body);
        let Some(Detail::Exec(e)) = &d.detail else { panic!("no exec detail: {d:?}") };
        assert_eq!((e.filename.as_str(), e.stage.as_str(), e.matched_by.as_deref()), ("/usr/bin/terraform", "early", Some("argv0")));
        assert_eq!(d.argv, vec!["terraform"]);
    }
}

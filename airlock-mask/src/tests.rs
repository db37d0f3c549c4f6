use super::*;

const KEY: &[u8] = b"an organisation's shared key, 32B";

fn masker(strategy: Strategy) -> Masker {
    let key = (strategy == Strategy::Hash).then(|| KEY.to_vec());
    Masker::new(strategy, key).expect("valid masker")
}

fn masked_argv(strategy: Strategy, words: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    masker(strategy).mask_argv(&mut argv);
    argv
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn masks_every_credential_shape() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["mysql", "--password=hunter2", "db"], &["mysql", "--password=****", "db"]),
        (&["cli", "--token", "abc123def", "run"], &["cli", "--token", "****", "run"]),
        (&["az", "login", "--client-secret", "s3cr3t"], &["az", "login", "--client-secret", "****"]),
        (&["env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "aws", "s3", "ls"], &["env", "AWS_SECRET_ACCESS_KEY=****", "aws", "s3", "ls"]),
        (&["env", "GITHUB_TOKEN=x"], &["env", "GITHUB_TOKEN=****"]),
        (&["echo", "AKIAIOSFODNN7EXAMPLE"], &["echo", "****"]),
        (&["git", "push", "https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r"], &["git", "push", "https://****@github.com/o/r"]),
        (&["curl", "https://user:pa55w0rd@example.com/x"], &["curl", "https://user:****@example.com/x"]),
        (&["curl", "-H", "Authorization: Bearer abcdefghijklmnop"], &["curl", "-H", "Authorization: Bearer ****"]),
        (&["x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"], &["x", "****"]),
        (&["slack", "xoxb-1234567890-abcdefghij"], &["slack", "****"]),
        (&["gh", "auth", "login", "--with-token", "github_pat_11ABCDEFG0123456789_abcdef"], &["gh", "auth", "login", "--with-token", "****"]),
        (&["ssh-add", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"], &["ssh-add", "****"]),
    ];
    for (input, want) in cases {
        assert_eq!(masked_argv(Strategy::Full, input), strings(want), "input {input:?}");
    }
}

#[test]
fn masks_secrets_inside_a_shell_script_argument() {
    let got = masked_argv(Strategy::Full, &["bash", "-c", "kubectl get pods --token=abc123 && env API_TOKEN=xyz789 run; mysql --password hunter2"]);
    assert_eq!(got[2], "kubectl get pods --token=**** && env API_TOKEN=**** run; mysql --password ****");
}

#[test]
fn leaves_ordinary_commands_alone() {
    for argv in [
        &["terraform", "-chdir=infra", "apply"][..],
        &["kubectl", "--context", "prod", "delete", "pod", "x"],
        &["git", "commit", "-m", "fix the token parser"],
        &["ls", "-la", "/etc/passwd"],
        &["cargo", "test", "--", "--test-threads=2"],
        &["git", "clone", "git@github.com:org/repo.git"],
        &["npm", "install", "lodash@4.17.21", "@types/node@20.1.0"],
        &["date", "-d", "2024-01-15", "+%s"],
        &["sleep", "1700000000000000000"],
    ] {
        for strategy in Strategy::ALL {
            assert_eq!(masked_argv(strategy, argv), strings(argv), "{strategy}");
        }
    }
}

#[test]
fn a_secret_option_followed_by_another_option_masks_nothing_extra() {
    assert_eq!(masked_argv(Strategy::Full, &["tool", "--token", "--verbose"]), strings(&["tool", "--token", "--verbose"]));
}

/// Text, and what `type_only` makes of it: the label says which recogniser fired.
#[test]
fn every_recogniser_labels_what_it_finds() {
    let cases: &[(&str, &str)] = &[
        ("AKIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
        ("ASIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123", "[GITHUB_TOKEN]"),
        ("xoxb-1234567890-abcdefghij", "[SLACK_TOKEN]"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "[JWT]"),
        ("Authorization: Bearer abcdefghijklmnop", "Authorization: Bearer [BEARER_TOKEN]"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [PASSWORD]"),
        ("https://user:pa55w0rd@example.com/x", "https://user:[PASSWORD]@example.com/x"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- rest", "[PRIVATE_KEY] rest"),
        ("run --api-key=abc123 now", "run --api-key=[SECRET] now"),
        ("run --db-password hunter2", "run --db-password [PASSWORD]"),
        ("DB_PASSWORD=hunter2 run", "DB_PASSWORD=[PASSWORD] run"),
        ("--token=ghp_abcdefghijklmnopqrstuvwxyz0123", "--token=[GITHUB_TOKEN]"),
        ("mail alice@example.com", "mail [EMAIL]"),
        ("to:first.last+tag@mail.example.co.uk,", "to:[EMAIL],"),
        ("pay 4111111111111111", "pay [CARD_NUMBER]"),
        ("pay 4111 1111 1111 1111.", "pay [CARD_NUMBER]."),
        ("pay 4111-1111-1111-1111", "pay [CARD_NUMBER]"),
        ("amex 378282246310005", "amex [CARD_NUMBER]"),
        ("mc 5555555555554444 discover 6011111111111117", "mc [CARD_NUMBER] discover [CARD_NUMBER]"),
        ("ssn 123-45-6789", "ssn [SSN]"),
        ("4111 1111 1111 1111 123-45-6789", "[CARD_NUMBER] [SSN]"),
        ("ssn 665-01-0001", "ssn [SSN]"),
        ("nino AB123456C", "nino [UK_NINO]"),
        ("nino JG 10 37 28 D", "nino [UK_NINO]"),
        ("dni 12345678Z", "dni [ES_DNI]"),
        ("dni 12345678-Z", "dni [ES_DNI]"),
        ("nie X1234567L", "nie [ES_DNI]"),
        ("steuer-id 86095742719", "steuer-id [DE_TAX_ID]"),
        ("steuer-id 86 095 742 719", "steuer-id [DE_TAX_ID]"),
        ("steuer-id 65929970489", "steuer-id [DE_TAX_ID]"),
    ];
    let masker = masker(Strategy::TypeOnly);
    for (text, want) in cases {
        assert_eq!(masker.mask_text(text), *want, "text {text:?}");
    }
}

/// Lookalikes each recogniser must leave: wrong checksums, unissued ranges,
/// strings that are not what they resemble.
#[test]
fn lookalikes_are_left_alone() {
    let cases: &[&str] = &[
        // Not e-mail addresses.
        "user@localhost",
        "@example.com",
        "lodash@4.17.21",
        "a@b.c",
        "admin@10.0.0.1",
        "git@github.com:org/repo.git",
        "foo@bar",
        // Card-length numbers failing Luhn, or outside the networks' ranges.
        "4111111111111112",
        "4111 1111 1111 1112",
        "5555555555554445",
        "1234567812345670",
        "9111111111111111",
        "411111111111",
        "41111111111111111111111",
        // Unissued SSNs, or dashed numbers that merely look like one.
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "987-65-4321",
        "123-00-4567",
        "123-45-0000",
        "1-123-45-6789",
        "123-45-6789-0",
        "123456789",
        // National insurance numbers with letters HMRC never uses.
        "BG123456C",
        "GB123456C",
        "DA123456A",
        "AO123456A",
        "AB123456E",
        // DNI and NIE with the wrong control letter.
        "12345678A",
        "X1234567A",
        "W1234567L",
        // Tax ids with a wrong check digit, a leading 0, or digits repeated too often.
        "86095742718",
        "06095742719",
        "11111111111",
        "12345678901",
    ];
    for strategy in Strategy::ALL {
        let masker = masker(strategy);
        for text in cases {
            let line = format!("echo {text} done");
            assert_eq!(masker.mask_text(&line), line, "{strategy}: {text:?}");
        }
    }
}

#[test]
fn each_strategy_masks_a_value_its_own_way() {
    let input = ["deploy", "--token", "AKIAIOSFODNN7EXAMPLE", "--password=hunter2", "notify", "alice@example.com"];
    let full = masked_argv(Strategy::Full, &input);
    assert_eq!(full, strings(&["deploy", "--token", "****", "--password=****", "notify", "****"]));
    let partial = masked_argv(Strategy::Partial, &input);
    assert_eq!(partial, strings(&["deploy", "--token", "****MPLE", "--password=****", "notify", "****.com"]));
    let type_only = masked_argv(Strategy::TypeOnly, &input);
    assert_eq!(type_only, strings(&["deploy", "--token", "[AWS_KEY]", "--password=[PASSWORD]", "notify", "[EMAIL]"]));
    let hash = masked_argv(Strategy::Hash, &input);
    let hash_shape = Regex::new(r"^\[[A-Z_]+:[0-9a-f]{12}\]$").expect("pattern");
    assert!(hash_shape.is_match(&hash[2]) && hash[2].starts_with("[AWS_KEY:"), "{hash:?}");
    assert!(hash[3].starts_with("--password=[PASSWORD:") && hash_shape.is_match(&hash[3]["--password=".len()..]), "{hash:?}");
    assert!(hash[5].starts_with("[EMAIL:") && hash_shape.is_match(&hash[5]), "{hash:?}");
}

#[test]
fn partial_masking_keeps_the_last_four_of_long_values_only() {
    let masker = masker(Strategy::Partial);
    assert_eq!(masker.mask_text("card 4111 1111 1111 1111"), "card ****1111");
    assert_eq!(masker.mask_text("ssn 123-45-6789"), "ssn ****6789");
    assert_eq!(masker.mask_text("--password=hunter22"), "--password=****");
    assert_eq!(masker.mask_text("--password=hunter222"), "--password=****r222");
}

#[test]
fn hashes_are_equal_for_equal_keys_and_values_only() {
    let hash = |key: &[u8], text: &str| Masker::new(Strategy::Hash, Some(key.to_vec())).expect("masker").mask_text(text);
    let other_key = b"another organisation's key......";
    assert_eq!(hash(KEY, "AKIAIOSFODNN7EXAMPLE"), hash(KEY, "AKIAIOSFODNN7EXAMPLE"));
    assert_ne!(hash(KEY, "AKIAIOSFODNN7EXAMPLE"), hash(KEY, "AKIAIOSFODNN7EXAMPLF"));
    assert_ne!(hash(KEY, "AKIAIOSFODNN7EXAMPLE"), hash(other_key, "AKIAIOSFODNN7EXAMPLE"));
    // The same value is the same in any context, so records can be correlated.
    let in_url = hash(KEY, "https://user:pa55w0rd@example.com");
    let as_option = hash(KEY, "--password=pa55w0rd");
    assert_eq!(in_url["https://user:".len()..in_url.len() - "@example.com".len()], as_option["--password=".len()..]);
}

#[test]
fn the_hash_strategy_refuses_to_start_without_a_usable_key() {
    assert_eq!(Masker::new(Strategy::Hash, None).unwrap_err(), MaskError::HashKeyMissing);
    assert_eq!(Masker::new(Strategy::Hash, Some(Vec::new())).unwrap_err(), MaskError::HashKeyTooShort(0));
    assert_eq!(Masker::new(Strategy::Hash, Some(b"short".to_vec())).unwrap_err(), MaskError::HashKeyTooShort(5));
    assert!(Masker::new(Strategy::Hash, Some(vec![7; MIN_HASH_KEY_BYTES])).is_ok());
    for strategy in [Strategy::Full, Strategy::Partial, Strategy::TypeOnly] {
        assert!(Masker::new(strategy, None).is_ok(), "{strategy}");
    }
    let debug = format!("{:?}", masker(Strategy::Hash));
    assert!(!debug.contains("organisation"), "the key shows in {debug}");
}

#[test]
fn overlapping_recognisers_mask_a_value_once() {
    let masker = masker(Strategy::TypeOnly);
    // A password in a URL is not also the start of an e-mail address.
    assert_eq!(masker.mask_text("https://user:pa55w0rd99@example.com"), "https://user:[PASSWORD]@example.com");
    // A token given to a secret option is masked once, by its form.
    assert_eq!(masker.mask_text("--token=AKIAIOSFODNN7EXAMPLE"), "--token=[AWS_KEY]");
    assert_eq!(masker.mask_text("TOKEN=xoxb-1234567890-abcdefghij"), "TOKEN=[SLACK_TOKEN]");
    let partial = self::masker(Strategy::Partial);
    assert_eq!(partial.mask_text("https://user:pa55w0rd99@example.com"), "https://user:****rd99@example.com");
}

#[test]
fn masking_twice_changes_nothing() {
    let inputs: &[&[&str]] = &[
        &["curl", "https://user:pa55w0rd99@example.com/x", "-H", "Authorization: Bearer abcdefghijklmnop"],
        &["mysql", "--password", "correct-horse-battery", "--user=root"],
        &["env", "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123", "DB_PASSWORD=hunter2hunter2"],
        &["mail", "alice@example.com", "4111 1111 1111 1111", "123-45-6789", "AB123456C", "12345678Z", "86095742719"],
        &["bash", "-c", "mysql --password hunter2hunter2 && curl -u bob:s3cretpass@x.io -d card=5555555555554444"],
    ];
    for strategy in Strategy::ALL {
        for input in inputs {
            let once = masked_argv(strategy, input);
            let mut twice = once.clone();
            masker(strategy).mask_argv(&mut twice);
            assert_eq!(twice, once, "{strategy}: {input:?}");
            assert_ne!(once, strings(input), "{strategy}: nothing masked in {input:?}");
            let text = input.join(" ");
            let once = masker(strategy).mask_text(&text);
            assert_eq!(masker(strategy).mask_text(&once), once, "{strategy}: {text:?}");
        }
    }
}

#[test]
fn checksums_hold_for_known_values() {
    for card in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "4012888888881881"] {
        assert!(pii::is_card_number(card), "{card}");
    }
    for card in ["4111111111111112", "378282246310006", "411111111111"] {
        assert!(!pii::is_card_number(card), "{card}");
    }
    for id in ["86095742719", "65929970489", "57549285017", "25768131411"] {
        assert!(pii::is_de_tax_id(id), "{id}");
    }
    for id in ["86095742710", "01234567890", "12345678903", "11123456789"] {
        assert!(!pii::is_de_tax_id(id), "{id}");
    }
}

#[test]
fn the_one_pass_check_passes_every_text_the_recognisers_find_something_in() {
    let texts = [
        "https://user:pa55w0rd99@example.com/x",
        "Authorization: Bearer abcdefghijklmnop",
        "mysql --password hunter2hunter2 && curl -u bob:s3cretpass@x.io -d card=5555555555554444",
        "DB_PASSWORD=hunter2hunter2",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "xoxb-1234567890-abcdef",
        "eyJhbGciOi.eyJzdWIiOi.sig",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
        "alice@example.com",
        "4111 1111 1111 1111",
        "123-45-6789",
        "AB123456C",
        "12345678Z",
        "86095742719",
    ];
    for text in texts {
        let mut findings = Vec::new();
        secrets::find(text, &mut findings);
        pii::find(text, &mut findings);
        assert!(!findings.is_empty(), "the corpus must hold something in {text:?}");
        assert!(may_hold_findings(text), "the one-pass check let {text:?} through unmasked");
    }
    for inert in ["/bin/true", "terraform", "apply", "-auto-approve", "./main.tf", "status"] {
        assert!(!may_hold_findings(inert), "{inert:?} holds nothing to mask");
        assert_eq!(masker(Strategy::Full).mask_text(inert), inert);
    }
}

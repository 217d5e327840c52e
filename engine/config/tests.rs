//! Tests of the configuration: defaults, file and environment layering, every validation error.

use super::*;
use figment::Jail;

/// Runs `body` in a jail (temporary cwd, isolated environment).
fn in_jail(body: impl FnOnce(&mut Jail) -> Result<(), figment::Error>) {
    Jail::expect_with(body);
}

fn load_err(path: &str) -> String {
    match Config::load(Some(Path::new(path))) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_valid_without_a_file() {
    in_jail(|_| {
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(config, Config::default());
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.telemetry.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(config.max_event_bytes(), 64 * 1024);
        Ok(())
    });
}

#[test]
fn shipped_example_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("veto.toml");
    let text = std::fs::read_to_string(&example).expect("veto.toml is shipped");
    in_jail(|jail| {
        jail.create_file("veto.toml", &text)?;
        let config = Config::load(Some(Path::new("veto.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.kafka.topics.payments, "payments");
        assert_eq!(config.timers.resolution, Duration::from_millis(1));
        assert_eq!(config.store.memory_budget, ByteSize::gib(1));
        assert_eq!(config.pipeline.max_event_bytes, ByteSize::kib(64));
        assert_eq!(config.rules.swap_deadline, Duration::from_millis(500));
        assert!(config.rules.paths[0].ends_with("rules/payments.veto"));
        Ok(())
    });
}

#[test]
fn reads_typed_values_and_resolves_paths_against_the_file() {
    in_jail(|jail| {
        jail.create_dir("conf")?;
        jail.create_file(
            "conf/veto.toml",
            r#"
            [kafka]
            brokers = "k1:9092,k2:9092"
            input_format = "json"
            delivery = "exactly_once"
            librdkafka = { "security.protocol" = "SASL_SSL", "sasl.mechanisms" = "SCRAM-SHA-512" }
            [store]
            memory_budget = "512MiB"
            data_dir = "state"
            checkpoint_interval = "25s 500ms"
            [timers]
            resolution = "500us"
            [pipeline]
            max_event_bytes = "1MiB"
            "#,
        )?;
        let config = Config::load(Some(Path::new("conf/veto.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.kafka.input_format, InputFormat::Json);
        assert_eq!(config.kafka.delivery, Delivery::ExactlyOnce);
        assert_eq!(config.kafka.librdkafka["security.protocol"], "SASL_SSL");
        assert_eq!(config.store.memory_budget, ByteSize::mib(512));
        assert_eq!(config.store.data_dir, Path::new("conf/state"));
        assert_eq!(
            config.store.checkpoint_interval,
            Duration::from_millis(25_500)
        );
        assert_eq!(config.timers.resolution, Duration::from_micros(500));
        assert_eq!(config.max_event_bytes(), 1024 * 1024);
        assert_eq!(
            config.rules.paths,
            [PathBuf::from("rules/payments.veto")],
            "defaults stay as given"
        );
        Ok(())
    });
}

#[test]
fn unknown_key_names_key_and_file() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[store]\nshardz = 64\n")?;
        let msg = load_err("veto.toml");
        assert!(
            msg.starts_with("veto.toml: store.shardz: unknown field"),
            "{msg}"
        );
        jail.create_file("veto.toml", "[kafak]\nbrokers = \"x\"\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml: kafak: unknown field"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_duration_names_key_and_file() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[timers]\nresolution = \"5 parsecs\"\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml: timers.resolution: "), "{msg}");
        assert!(msg.contains("parsecs"), "{msg}");
        Ok(())
    });
}

#[test]
fn swap_deadline_is_a_duration_within_1ms_and_10m() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[rules]\nswap_deadline = \"250ms\"\n")?;
        let config = Config::load(Some(Path::new("veto.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.rules.swap_deadline, Duration::from_millis(250));
        jail.create_file("veto.toml", "[rules]\nswap_deadline = \"soon\"\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml: rules.swap_deadline: "), "{msg}");
        jail.create_file("veto.toml", "[rules]\nswap_deadline = \"0s\"\n")?;
        assert_eq!(
            load_err("veto.toml"),
            "veto.toml: rules.swap_deadline: 0s is outside 1ms..10m"
        );
        jail.create_file("veto.toml", "")?;
        jail.set_env("VETO_RULES__SWAP_DEADLINE", "1h");
        assert_eq!(
            load_err("veto.toml"),
            "environment variable VETO_RULES__SWAP_DEADLINE: rules.swap_deadline: 1h is outside 1ms..10m"
        );
        Ok(())
    });
}

#[test]
fn bad_size_names_key_and_file() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[store]\nmemory_budget = \"lots\"\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml: store.memory_budget: "), "{msg}");
        Ok(())
    });
}

#[test]
fn exactly_once_caps_the_checkpoint_interval() {
    in_jail(|jail| {
        jail.create_file(
            "veto.toml",
            "[kafka]\ndelivery = \"exactly_once\"\n[store]\ncheckpoint_interval = \"1m\"\n",
        )?;
        let msg = load_err("veto.toml");
        assert!(msg.contains("store.checkpoint_interval"), "{msg}");
        assert!(msg.contains("exactly_once"), "{msg}");
        Ok(())
    });
}

#[test]
fn unknown_librdkafka_properties_are_errors_at_load() {
    in_jail(|jail| {
        jail.create_file(
            "veto.toml",
            "[kafka.librdkafka]\n\"fetch.wait.max.mz\" = \"5\"\n",
        )?;
        let msg = load_err("veto.toml");
        assert!(
            msg.starts_with("veto.toml: kafka.librdkafka: \"fetch.wait.max.mz\""),
            "{msg}"
        );
        assert!(msg.contains("No such configuration property"), "{msg}");
        Ok(())
    });
}

#[test]
fn huge_counts_and_durations_are_errors_naming_their_key() {
    // each of these panicked or overflowed in the running service before it was bounded
    let cases = [
        (
            "[timers]\nchannel_capacity = 4611686018427387904\n",
            "timers.channel_capacity",
        ),
        (
            "[pipeline]\nworkers = 9223372036854775807\n",
            "pipeline.workers",
        ),
        (
            "[pipeline]\nqueue_capacity = 4294967296\n",
            "pipeline.queue_capacity",
        ),
        (
            "[pipeline]\ndrain_timeout = \"10000000000000000000s\"\n",
            "pipeline.drain_timeout",
        ),
        (
            "[pipeline]\nmax_future_skew = \"400d\"\n",
            "pipeline.max_future_skew",
        ),
        (
            "[store]\ncheckpoint_interval = \"2d\"\n",
            "store.checkpoint_interval",
        ),
    ];
    for (toml, key) in cases {
        in_jail(|jail| {
            jail.create_file("veto.toml", toml)?;
            let msg = load_err("veto.toml");
            assert!(msg.starts_with(&format!("veto.toml: {key}: ")), "{msg}");
            Ok(())
        });
    }
}

#[test]
fn missing_file_is_named() {
    in_jail(|_| {
        assert_eq!(
            load_err("nowhere/veto.toml"),
            "config file nowhere/veto.toml: not found"
        );
        Ok(())
    });
}

#[test]
fn toml_syntax_error_names_file() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[store\nshards = 4\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml"), "{msg}");
        Ok(())
    });
}

#[test]
fn validation_errors_name_key_and_origin() {
    in_jail(|jail| {
        jail.create_file("veto.toml", "[store]\nshards = 48\n")?;
        assert_eq!(
            load_err("veto.toml"),
            "veto.toml: store.shards: 48 is not a power of two between 1 and 65536"
        );
        jail.create_file("veto.toml", "[kafka.librdkafka]\n\"group.id\" = \"x\"\n")?;
        let msg = load_err("veto.toml");
        assert!(
            msg.starts_with("veto.toml: kafka.librdkafka: \"group.id\" is set by Veto"),
            "{msg}"
        );
        jail.create_file("veto.toml", "[telemetry]\nlog_level = \"veto=loud\"\n")?;
        let msg = load_err("veto.toml");
        assert!(msg.starts_with("veto.toml: telemetry.log_level: "), "{msg}");
        jail.create_file("veto.toml", "")?;
        jail.set_env("VETO_TIMERS__RESOLUTION", "5s");
        assert_eq!(
            load_err("veto.toml"),
            "environment variable VETO_TIMERS__RESOLUTION: timers.resolution: 5s is outside 100us..1s"
        );
        Ok(())
    });
}

#[test]
fn env_overrides_win_over_the_file() {
    in_jail(|jail| {
        jail.create_file(
            "veto.toml",
            "[kafka]\nbrokers = \"file:9092\"\n[store]\nshards = 8\n[pipeline]\ndrain_timeout = \"3s\"\n",
        )?;
        jail.set_env("VETO_KAFKA__BROKERS", "env:9092");
        jail.set_env("VETO_STORE__SHARDS", "128");
        jail.set_env("VETO_STORE__MEMORY_BUDGET", "2GiB");
        jail.set_env("VETO_KAFKA__TOPICS__DECISIONS", "verdicts");
        jail.set_env("VETO_CONFIG", "not-an-override.toml");
        jail.set_env("VETO_KAFKA__LIBRDKAFKA", r#"{"sasl.password"="s3cret"}"#);
        let config = Config::load(Some(Path::new("veto.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.kafka.brokers, "env:9092");
        assert_eq!(config.store.shards, 128);
        assert_eq!(config.store.memory_budget, ByteSize::gib(2));
        assert_eq!(config.kafka.topics.decisions, "verdicts");
        assert_eq!(config.kafka.librdkafka["sasl.password"], "s3cret");
        assert_eq!(
            config.pipeline.drain_timeout,
            Duration::from_secs(3),
            "file value kept"
        );
        Ok(())
    });
}

#[test]
fn unknown_env_override_is_named() {
    in_jail(|jail| {
        jail.set_env("VETO_STORE__SHARDZ", "8");
        let msg = match Config::load(None) {
            Ok(_) => return Err("expected an error".to_string().into()),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.starts_with("environment variable VETO_STORE__SHARDZ: store.shardz: unknown field"),
            "{msg}"
        );
        Ok(())
    });
}

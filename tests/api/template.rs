//! infra/template.yaml against the code it deploys: every webhook has its route, every setting
//! the template sets is one the code reads, every metric the code emits is on the dashboard or
//! an alarm, and the queues are set up as the workers expect. (cfn-lint and `sam validate`
//! check the template itself: see scripts/test.sh.)

use callkeeper_core::config::SETTINGS;
use callkeeper_core::metrics::CATALOG;
use callkeeper_functions::Route;

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/template.yaml")).unwrap()
}

/// One line's value in a parameter's declaration (before its description), e.g. its `Default: `.
fn parameter_value(template: &str, name: &str, key: &str) -> String {
    let from = template.find(&format!("  {name}:\n    Type:")).unwrap_or_else(|| panic!("no parameter {name}"));
    let block = &template[from..from + template[from..].find("    Description:").unwrap()];
    block.split(key).nth(1).unwrap_or_else(|| panic!("{name} has no {key}")).lines().next().unwrap().trim().to_string()
}

/// Settings read outside `Config`: the store's, the relay binary's port, logging.
const OTHER_SETTINGS: &[&str] = &[
    "CALLKEEPER_STORE",
    "CALLKEEPER_TABLE",
    "CALLKEEPER_BUCKET",
    "TRANSCRIPTION_QUEUE",
    "REPLIES_QUEUE",
    "EVENTS_QUEUE",
    "PORT",
    "LOG_FORMAT",
];

/// Every `NAME: value` (function environments) and `{ Name: NAME, Value: … }` (the relay's):
/// CloudFormation's own keys are CamelCase, so an UPPER_SNAKE key is a setting.
fn settings_set(template: &str) -> Vec<String> {
    let upper = |s: &str| s.len() > 1 && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let mut names = Vec::new();
    for line in template.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(rest) = line.strip_prefix("{ Name: ") {
            let name = rest.split(',').next().unwrap().trim();
            if upper(name) {
                names.push(name.to_string());
            }
        } else if let Some((key, rest)) = line.split_once(':') {
            if upper(key) && !rest.starts_with(':') {
                names.push(key.to_string());
            }
        }
    }
    names
}

/// The one binary serves each function by the name its `Handler` gives: every function the
/// template deploys is one the binary knows, and every one it knows is deployed.
#[test]
fn every_function_is_one_the_binary_serves() {
    use callkeeper_functions::lambda::Function;
    let template = template();
    let handlers: Vec<&str> = template.lines().filter_map(|l| l.trim().strip_prefix("Handler: ")).collect();
    for handler in &handlers {
        assert!(Function::from_name(handler).is_some(), "the template deploys {handler}, which the binary does not serve");
    }
    for function in Function::ALL {
        assert_eq!(handlers.iter().filter(|h| **h == function.name()).count(), 1, "{} deployed once", function.name());
    }
    assert!(template.contains("CodeUri: ../target/lambda/functions/\n"), "the one artifact, for every function");
}

#[test]
fn every_webhook_has_its_route() {
    let template = template();
    for route in Route::ALL {
        assert!(template.contains(&format!("RouteKey: POST {}\n", route.path())), "no route for {}", route.path());
    }
}

#[test]
fn every_setting_the_template_sets_is_read_by_the_code() {
    let names = settings_set(&template());
    assert!(names.len() > 30, "found the settings: {names:?}");
    for name in &names {
        let known = SETTINGS.iter().any(|(setting, _, _)| setting == name) || OTHER_SETTINGS.contains(&name.as_str());
        assert!(known, "infra/template.yaml sets {name}, which nothing reads");
    }
    for needed in ["PUBLIC_BASE_URL", "RELAY_PUBLIC_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN_SSM_PARAMETER", "METRICS_NAMESPACE"] {
        let times = names.iter().filter(|n| *n == needed).count();
        assert_eq!(times, 2, "{needed} is set for the functions and for the relay");
    }
    assert!(!names.iter().any(|n| n == "TWILIO_AUTH_TOKEN" || n == "OPENAI_API_KEY"), "secrets come by SSM parameter");
}

#[test]
fn every_metric_the_code_emits_is_watched() {
    let template = template();
    for metric in CATALOG {
        // In the dashboard's JSON: a metric array, or a SEARCH expression's MetricName=\"…\".
        let named = template.contains(&format!("\"{}\"", metric.name))
            || template.contains(&format!("\\\"{}\\\"", metric.name))
            || [" ", "\n"].iter().any(|end| template.contains(&format!("MetricName: {}{end}", metric.name)));
        assert!(named, "{} is on neither the dashboard nor an alarm", metric.name);
    }
}

#[test]
fn the_queues_are_what_the_workers_expect() {
    let template = template();
    // The code finds a dead-letter queue by its queue's name plus "-dlq".
    for queue in callkeeper_core::job::QueueName::ALL.map(|q| q.as_str()) {
        assert!(template.contains(&format!("QueueName: !Sub \"${{AWS::StackName}}-{queue}\"\n")));
        assert!(template.contains(&format!("QueueName: !Sub \"${{AWS::StackName}}-{queue}-dlq\"\n")));
    }
    assert_eq!(template.matches("maxReceiveCount: 5\n").count(), callkeeper_core::job::QueueName::ALL.len());
    assert_eq!(template.matches("QUEUE_MAX_RECEIVES: \"5\"").count() + template.matches("QUEUE_MAX_RECEIVES, Value: \"5\"").count(), 2);
    // Lambda requires a queue's visibility to be at least its worker's timeout; a job stops
    // MARGIN before the timeout, and each request it makes fits inside it.
    let after = |marker: &str, key: &str| -> u64 {
        let from = template.find(marker).unwrap_or_else(|| panic!("{marker}"));
        let rest = &template[from..];
        let at = rest.find(key).unwrap() + key.len();
        rest[at..].split_whitespace().next().unwrap().trim_matches('"').parse().unwrap()
    };
    let transcribe_timeout = after("  TranscribeFunction:\n", "Timeout: ");
    let reply_timeout = after("  ReplyFunction:\n", "Timeout: ");
    assert!(after("  TranscriptionQueue:\n", "VisibilityTimeout: ") > transcribe_timeout);
    assert!(after("  RepliesQueue:\n", "VisibilityTimeout: ") > reply_timeout);
    let deliver_timeout = after("  DeliverEventsFunction:\n", "Timeout: ");
    assert!(after("  EventsQueue:\n", "VisibilityTimeout: ") > deliver_timeout);
    let margin = callkeeper_functions::sqs_batch::MARGIN.as_secs();
    let twilio = callkeeper_core::twilio_rest::RetryPolicy::default().total.as_secs();
    assert!(callkeeper_core::openai::TRANSCRIBE_TIMEOUT.as_secs() + twilio + margin <= transcribe_timeout);
    // A reply to a voice note: its download, its transcription, the answer, the send.
    let voice_note = callkeeper_core::twilio_rest::DOWNLOAD_TIMEOUT + callkeeper_core::openai::TRANSCRIBE_TIMEOUT;
    assert!(voice_note.as_secs() + callkeeper_core::openai::CHAT_TIMEOUT.as_secs() + twilio + margin <= reply_timeout);
    assert!(callkeeper_core::event_delivery::TIMEOUT.as_secs() + margin <= deliver_timeout);
    // A worker that dies frees its job's claim long before the job is seen again.
    let lease = callkeeper_core::config::SETTINGS.iter().find(|s| s.0 == "JOB_LEASE_SECS").unwrap().1.parse::<u64>().unwrap();
    assert!(lease < after("  RepliesQueue:\n", "VisibilityTimeout: "));
    // The watchdog's minute of polling fits in its timeout.
    assert!(after("  WatchdogFunction:\n", "WATCHDOG_RUN_SECS: \"") + 10 <= after("  WatchdogFunction:\n", "Timeout: "));
}

#[test]
fn the_dashboard_body_is_json_once_substituted() {
    let template = template();
    let start =
        template.find("DashboardBody: !Sub\n        - |\n").expect("the dashboard's body") + "DashboardBody: !Sub\n        - |\n".len();
    let end = start + template[start..].find("\n        - Ns:").expect("the body's substitutions");
    // What CloudFormation's !Sub does: every ${…} becomes a value (none of ours hold a quote).
    let mut body = String::new();
    let mut rest = &template[start..end];
    while let Some(at) = rest.find("${") {
        body.push_str(&rest[..at]);
        body.push_str("subst");
        rest = &rest[at + rest[at..].find('}').unwrap() + 1..];
    }
    body.push_str(rest);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}"));
    let widgets = doc["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 11, "{} widgets", widgets.len());
    for widget in widgets {
        for key in ["type", "x", "y", "width", "height", "properties"] {
            assert!(widget.get(key).is_some(), "a widget without {key}: {widget}");
        }
        assert!(widget["x"].as_u64().unwrap() + widget["width"].as_u64().unwrap() <= 24, "wider than the grid: {widget}");
    }
}

#[test]
fn alarms_can_reach_their_topic() {
    let template = template();
    let from = template.find("  AlarmTopic:\n").expect("the alarm topic");
    let topic = &template[from..from + template[from..].find("\n\n").unwrap()];
    // CloudWatch alarms cannot use SNS's AWS-managed key: with it, no notification is delivered.
    assert!(!topic.contains("alias/aws/sns"), "the alarm topic uses the AWS-managed key:\n{topic}");
    let alarms = template.matches("Type: AWS::CloudWatch::Alarm\n").count();
    assert!(alarms >= 5, "{alarms} alarms");
    assert_eq!(template.matches("AlarmActions: [!Ref AlarmTopic]\n").count(), alarms, "every alarm notifies the topic");
}

#[test]
fn secret_parameters_are_named_from_the_root() {
    // The policy's ARNs are `…:parameter${Name}`: a name without its leading slash would grant
    // a parameter that does not exist, and the process would not start.
    let template = template();
    for parameter in ["TwilioAuthTokenParameter", "StreamTokenSecretParameter", "OpenAiApiKeyParameter"] {
        let pattern = parameter_value(&template, parameter, "AllowedPattern: ");
        assert!(pattern.starts_with("\"^/") || pattern.starts_with("\"^(/"), "{parameter}: {pattern}");
        assert!(template.contains(&format!(":parameter${{{parameter}}}\"")), "{parameter} is not in the policy");
    }
}

#[test]
fn the_relay_defaults_pass_the_fargate_rule_and_every_cpu_has_its_memories() {
    let template = template();
    // `!Equals [!Ref RelayCpu, "512"], !Contains [["1024", …], !Ref RelayMemory]` per CPU.
    let rule: Vec<(String, Vec<String>)> = template
        .lines()
        .filter_map(|line| line.split_once("!Equals [!Ref RelayCpu, \"")?.1.split_once("\"]"))
        .map(|(cpu, rest)| {
            let list = rest.split("[[").nth(1).unwrap().split(']').next().unwrap();
            (cpu.to_string(), list.split(", ").map(|m| m.trim_matches('"').to_string()).collect())
        })
        .collect();
    let cpus: Vec<String> = parameter_value(&template, "RelayCpu", "AllowedValues: ")
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    assert_eq!(rule.iter().map(|(cpu, _)| cpu.clone()).collect::<Vec<_>>(), cpus, "a memory list for every RelayCpu value");
    let (cpu, memory) = (parameter_value(&template, "RelayCpu", "Default: "), parameter_value(&template, "RelayMemory", "Default: "));
    let (cpu, memory) = (cpu.trim_matches('"'), memory.trim_matches('"'));
    let allowed = &rule.iter().find(|(c, _)| c == cpu).unwrap().1;
    assert!(allowed.iter().any(|m| m == memory), "the defaults {cpu}/{memory} break the rule: {allowed:?}");
}

/// The block of one resource: its lines up to the next one at the resources' indent.
fn resource<'a>(template: &'a str, name: &str) -> &'a str {
    let from = template.find(&format!("\n  {name}:\n    Type: ")).unwrap_or_else(|| panic!("no resource {name}")) + 1;
    let body = &template[from..];
    let mut end = body.find('\n').unwrap() + 1;
    for line in body[end..].split_inclusive('\n') {
        if line.starts_with("  ") && !line[2..].starts_with(' ') {
            break;
        }
        end += line.len();
    }
    &body[..end]
}

/// The relay scales on its live streams per task, with a target for every task size, and a
/// deploy or scale-in moves calls rather than waiting out ten minutes or dropping them.
#[test]
fn the_relay_scales_on_live_streams_per_task_and_moves_calls_when_stopped() {
    let template = template();
    let target = resource(&template, "RelayScalableTarget");
    assert!(target.contains("ScalableDimension: ecs:service:DesiredCount"), "{target}");
    assert!(target.contains("MinCapacity: !Ref RelayMinCount") && target.contains("MaxCapacity: !Ref RelayMaxCount"), "{target}");
    assert!(target.contains("${RelayService.Name}"), "the target is the relay's service: {target}");
    let policy = resource(&template, "RelayScaling");
    assert!(
        policy.contains("PolicyType: TargetTrackingScaling") && policy.contains("ScalingTargetId: !Ref RelayScalableTarget"),
        "{policy}"
    );
    // The metric the relay publishes, averaged over the points of every task: streams per task.
    assert!(policy.contains(&format!("MetricName: {}", callkeeper_core::metrics::RELAY_CONNECTIONS.name)), "{policy}");
    const { assert!(callkeeper_core::metrics::RELAY_CONNECTIONS.with_total, "the scaling reads the metric's total, without dimension") };
    assert!(
        policy.contains("Statistic: Average") && policy.contains("TargetValue: !FindInMap [RelayStreamsPerTask, !Ref RelayCpu, Target]"),
        "{policy}"
    );

    // A target per RelayCpu value, rising with the CPU, each far inside what a relay admits.
    let cpus: Vec<String> = parameter_value(&template, "RelayCpu", "AllowedValues: ")
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    let max_connections: u64 = SETTINGS.iter().find(|(name, _, _)| *name == "MAX_CONNECTIONS").unwrap().1.parse().unwrap();
    let mut last = 0;
    for cpu in &cpus {
        let line = template
            .lines()
            .find(|l| l.trim().starts_with(&format!("\"{cpu}\": {{ Target: ")))
            .unwrap_or_else(|| panic!("no target for RelayCpu {cpu}"));
        let value: u64 = line.split("Target: ").nth(1).unwrap().trim_end_matches(" }").trim().parse().unwrap();
        assert!(value > last, "targets rise with the CPU: {cpu} → {value}");
        // Each stream is two sockets (Twilio's and the model's) plus headroom for a burst.
        assert!(value * 2 < max_connections, "{cpu}: {value} streams would not fit under MAX_CONNECTIONS {max_connections}");
        last = value;
    }

    // Stopping a task: the relay reads its own target health and, once deregistered, moves its
    // calls within DRAIN_MOVE_SECS — inside the deregistration delay, after which the ALB
    // closes what is left. A call that would not move is closed at the drain deadline, inside
    // Fargate's stopTimeout (at most 120 s).
    let group = resource(&template, "RelayTargetGroup");
    let delay: u64 =
        group.split("deregistration_delay.timeout_seconds, Value: \"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    let task = resource(&template, "RelayTaskDefinition");
    let env = |name: &str| -> u64 {
        task.split(&format!("{{ Name: {name}, Value: \""))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} not set"))
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let look = callkeeper_relay::deregistration::LOOK_EVERY.as_secs();
    let stop_timeout: u64 = task.split("StopTimeout: ").nth(1).unwrap().lines().next().unwrap().trim().parse().unwrap();
    let (moves, deadline) = (env("DRAIN_MOVE_SECS"), env("DRAIN_DEADLINE_SECS"));
    assert!(
        moves > 0 && look + moves + 10 <= delay,
        "moves within {moves} s after a {look} s look must end well inside the {delay} s delay"
    );
    assert!(delay <= 60, "a deploy waits {delay} s per task");
    assert!(moves + 30 <= deadline && deadline < stop_timeout && stop_timeout <= 120, "{moves} / {deadline} / {stop_timeout}");
    assert!(task.contains("{ Name: RELAY_TARGET_GROUP_ARN, Value: !Ref RelayTargetGroup }"), "{task}");
    let role = resource(&template, "RelayTaskRole");
    assert!(role.contains("Action: elasticloadbalancing:DescribeTargetHealth"), "{role}");

    // Scale-in protection, when chosen: the permission for the task's own protection and the
    // setting that turns it on, both under the same condition.
    assert!(role.contains("ProtectsRelaysFromScaleIn") && role.contains("ecs:UpdateTaskProtection"), "{role}");
    assert!(role.contains(":task/${Cluster}/*"), "only this cluster's tasks: {role}");
    assert!(task.contains("!If [ProtectsRelaysFromScaleIn, { Name: RELAY_SCALE_IN_PROTECTION, Value: \"on\" }"), "{task}");
    assert_eq!(parameter_value(&template, "RelayScaleInProtection", "Default: "), "\"off\"");
}

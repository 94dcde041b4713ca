//! A relay drains as soon as the load balancer deregisters it, before the ALB closes its
//! streams: the same `DescribeTargetHealth` calls production makes, against moto's ELBv2.

use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetTypeEnum};
use callkeeper_core::store::contract::require_moto;
use callkeeper_relay::deregistration::{watch, Target};
use callkeeper_relay::drain::Drain;
use std::time::Duration;

/// A VPC in moto's EC2, through its Query API (the tests carry no EC2 SDK for one call): moto
/// reads the region from the credential scope and checks no signature.
async fn vpc(endpoint: &str) -> String {
    let body = reqwest::Client::new()
        .post(endpoint)
        .header("authorization", "AWS4-HMAC-SHA256 Credential=testing/20261204/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=0")
        .form(&[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16"), ("Version", "2016-11-15")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = body.find("<vpcId>").expect("moto created a VPC") + "<vpcId>".len();
    body[start..start + body[start..].find('<').unwrap()].to_string()
}

#[tokio::test]
async fn a_relay_drains_once_the_load_balancer_deregisters_it_and_not_before() {
    let sdk = require_moto().await;
    let endpoint = std::env::var("CALLKEEPER_TEST_AWS_ENDPOINT").unwrap();
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let vpc = vpc(&endpoint).await;
    let name = format!("relays-{}", std::process::id());
    let group = elb
        .create_target_group()
        .name(&name)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&vpc)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap();
    let arn = group.target_groups()[0].target_group_arn().unwrap().to_string();
    let me = TargetDescription::builder().id("10.0.1.17").port(8080).build();
    let other = TargetDescription::builder().id("10.0.1.18").port(8080).build();

    let drain = Drain::default();
    let target = Target { target_group_arn: arn.clone(), ip: "10.0.1.17".into(), port: 8080 };
    let watcher = tokio::spawn(watch(elb.clone(), target, drain.clone(), Duration::from_millis(100)));

    // Not yet registered: a task that is starting, not one that is leaving.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!drain.is_draining(), "a relay not yet in the target group drained");

    elb.register_targets().target_group_arn(&arn).targets(me.clone()).targets(other.clone()).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!drain.is_draining(), "a registered relay drained");

    // Another relay leaving is not this one's business.
    elb.deregister_targets().target_group_arn(&arn).targets(other).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!drain.is_draining(), "a relay drained when another was deregistered");

    elb.deregister_targets().target_group_arn(&arn).targets(me).send().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), drain.draining_signal().wait_for(|d| *d))
        .await
        .expect("the relay drains within a few looks of its deregistration")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), watcher).await.expect("the watch ends once it drained").unwrap();
}

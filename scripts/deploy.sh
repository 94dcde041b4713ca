#!/usr/bin/env bash
# Builds and deploys callkeeper to the AWS account and region of your AWS CLI profile:
#
#   1. the functions, with cargo-lambda: one binary, target/lambda/functions/bootstrap, that every
#      function runs (each by the name its Handler gives);
#   2. the relay's image (relay/Dockerfile), pushed to an ECR repository (created if missing);
#   3. the stack (infra/template.yaml), with `sam deploy`, given that image.
#
#   scripts/deploy.sh --guided        # the first time: sam asks for the parameters, saves them
#   scripts/deploy.sh                 # afterwards
#
# Needs: the AWS CLI (v2) with credentials, Docker with buildx, SAM CLI, git, and cargo-lambda
# (`pip install cargo-lambda`). Settings: STACK (callkeeper), ARCH (arm64 or x86_64; must match
# the stack's Architecture parameter), RELAY_REPOSITORY (callkeeper-relay). Extra arguments go to
# `sam deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK="${STACK:-callkeeper}"
ARCH="${ARCH:-arm64}"
REPOSITORY="${RELAY_REPOSITORY:-callkeeper-relay}"
case "$ARCH" in
  arm64) lambda_arch=--arm64; platform=linux/arm64 ;;
  x86_64) lambda_arch=--x86-64; platform=linux/amd64 ;;
  *) echo "ARCH must be arm64 or x86_64, got $ARCH" >&2; exit 2 ;;
esac
for tool in aws docker sam git cargo-lambda; do
  command -v "$tool" >/dev/null || { echo "deploy.sh needs $tool on PATH" >&2; exit 2; }
done

region="${AWS_REGION:-$(aws configure get region)}"
account="$(aws sts get-caller-identity --query Account --output text)"
sha="$(git rev-parse --short=12 HEAD)"
tag="$sha$(git diff --quiet HEAD || echo "-dirty-$(date +%s)")"
registry="$account.dkr.ecr.$region.amazonaws.com"
image="$registry/$REPOSITORY:$tag"

echo "== functions ($ARCH) -> target/lambda/"
CALLKEEPER_GIT_SHA="$sha" cargo-lambda lambda build --release --locked "$lambda_arch" \
  -p callkeeper-functions --lambda-dir target/lambda

echo "== relay image -> $image"
if ! aws ecr describe-repositories --region "$region" --repository-names "$REPOSITORY" >/dev/null 2>&1; then
  aws ecr create-repository --region "$region" --repository-name "$REPOSITORY" \
    --image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE >/dev/null
fi
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
if ! aws ecr describe-images --region "$region" --repository-name "$REPOSITORY" --image-ids imageTag="$tag" >/dev/null 2>&1; then
  docker buildx build --platform "$platform" -f relay/Dockerfile \
    --build-arg CALLKEEPER_GIT_SHA="$sha" -t "$image" --push .
fi

echo "== stack $STACK"
sam deploy --stack-name "$STACK" --region "$region" \
  --parameter-overrides "RelayImageUri=$image" "Architecture=$ARCH" "$@"

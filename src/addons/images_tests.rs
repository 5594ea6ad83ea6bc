use super::*;

fn refs(text: &str) -> Vec<String> {
    workload_images(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(ToString::to_string)
        .collect()
}

const DIGEST: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";

/// Shaped like flannel's release kube-flannel.yml: a leading `---`, RBAC, a ConfigMap whose
/// block scalar holds an `image:` line, and a DaemonSet with two init containers (one
/// image twice) and one container.
const FLANNEL_LIKE: &str = r#"---
kind: Namespace
apiVersion: v1
metadata:
  name: kube-flannel
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
data:
  notes: |
    image: docker.io/not/a-workload:v9
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
spec:
  template:
    spec:
      initContainers:
      - name: install-cni-plugin
        image: ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1   # pinned by flannel
      - name: install-cni
        image: ghcr.io/flannel-io/flannel:v0.27.3
      containers:
      # the daemon itself
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.27.3
"#;

#[test]
fn init_containers_and_containers_of_every_document_each_once_comments_ignored() {
    assert_eq!(
        refs(FLANNEL_LIKE),
        [
            "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1",
            "ghcr.io/flannel-io/flannel:v0.27.3",
        ]
    );
}

#[test]
fn non_workload_documents_give_nothing() {
    let text = "kind: ConfigMap\nmetadata:\n  name: x\ndata:\n  image: busybox:1\n---\n\
                kind: CustomResourceDefinition\nspec:\n  template:\n    spec:\n      containers:\n      - image: a/b:c\n";
    assert!(refs(text).is_empty());
    assert!(refs("").is_empty());
    assert!(refs("---\n# only a comment\n").is_empty());
}

#[test]
fn quoted_refs_and_docker_hub_names_are_normalised() {
    let text = "kind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: \"flannel/flannel:v0.26.1\"\n  - name: b\n    image: 'busybox:1.36'\n";
    assert_eq!(
        refs(text),
        ["docker.io/flannel/flannel:v0.26.1", "docker.io/library/busybox:1.36"]
    );
}

#[test]
fn digests_are_kept_with_or_without_a_tag() {
    let text = format!(
        "kind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n      \
         - name: a\n        image: registry.k8s.io/metrics-server/metrics-server:v0.8.0@{DIGEST}\n      \
         - name: b\n        image: ghcr.io/x/y@{DIGEST}\n"
    );
    let got = workload_images(&text).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|r| r.digest.map(|d| d.oci()) == Some(DIGEST.to_string())));
    let tags: Vec<Option<&str>> = got.iter().map(|r| r.tag.as_deref()).collect();
    assert!(tags.contains(&Some("v0.8.0")) && tags.contains(&None), "{tags:?}");
}

#[test]
fn a_list_and_every_workload_kind_are_read() {
    let pod = |img: &str| format!("spec:\n  containers:\n  - name: c\n    image: {img}\n");
    let indent = |s: String, n: usize| s.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect::<String>();
    let text = format!(
        "apiVersion: v1\nkind: List\nitems:\n- kind: StatefulSet\n  metadata:\n    name: s\n  spec:\n    template:\n{}\
         - kind: Job\n  spec:\n    template:\n{}\
         ---\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n{}\
         ---\nkind: PodTemplate\ntemplate:\n{}\
         ---\nkind: Pod\nspec:\n  ephemeralContainers:\n  - name: debug\n    image: e/debug:1\n",
        indent(pod("a/statefulset:1"), 6),
        indent(pod("a/job:1"), 6),
        indent(pod("a/cronjob:1"), 8),
        indent(pod("a/podtemplate:1"), 2),
    );
    assert_eq!(
        refs(&text),
        [
            "docker.io/a/cronjob:1",
            "docker.io/a/job:1",
            "docker.io/a/podtemplate:1",
            "docker.io/a/statefulset:1",
            "docker.io/e/debug:1",
        ]
    );
}

#[test]
fn containers_without_an_image_are_skipped() {
    let text = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n      - name: b\n        image: \"\"\n";
    assert!(refs(text).is_empty());
}

#[test]
fn a_bad_reference_names_the_workload_and_container() {
    let text = "kind: DaemonSet\nmetadata:\n  name: kube-flannel-ds\nspec:\n  template:\n    spec:\n      containers:\n      - name: kube-flannel\n        image: ghcr.io/flannel-io/flannel\n";
    let e = workload_images(text).unwrap_err().to_string();
    assert!(
        e.contains("DaemonSet kube-flannel-ds") && e.contains("container kube-flannel") && e.contains("tag"),
        "{e}"
    );
}

#[test]
fn broken_yaml_is_an_error() {
    assert!(matches!(
        workload_images("kind: Pod\nspec: [unclosed\n"),
        Err(ImagesError::Parse(_))
    ));
}

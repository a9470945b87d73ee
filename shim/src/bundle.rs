//! What the shim reads from a container's bundle: the OCI spec's
//! annotations, and the pod they put the container in.

use std::collections::HashMap;
use std::path::Path;

/// The annotation CRI puts on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The annotations of the OCI spec in `bundle`.
pub fn bundle_annotations(bundle: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return HashMap::new();
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    spec.get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod a container belongs to: CRI's sandbox id, else the container's own id.
pub fn sandbox_id(annotations: &HashMap<String, String>, container_id: &str) -> String {
    annotations
        .get(SANDBOX_ID_ANNOTATION)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| container_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_grouped_by_cri_sandbox_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"pod1","x":"y"}}"#,
        )
        .unwrap();
        let a = bundle_annotations(dir.path());
        assert_eq!(sandbox_id(&a, "c1"), "pod1");
        assert_eq!(
            sandbox_id(&HashMap::new(), "c1"),
            "c1",
            "ctr's containers are their own pods"
        );
        assert!(bundle_annotations(Path::new("/nonexistent")).is_empty());
    }
}

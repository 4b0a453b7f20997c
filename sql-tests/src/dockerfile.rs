//! The Dockerfile at the root, read as instructions: what the Docker Compose and Kubernetes tests
//! (`tests/docker_compose.rs`, `tests/kubernetes.rs`) check the compose file and the manifests
//! against, without Docker.

/// The instructions of a Dockerfile, continuation lines joined, comments dropped: (keyword, rest).
pub fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The instructions of the last stage (from its `FROM` on): the image that is run.
pub fn runtime_stage(instructions: &[(String, String)]) -> &[(String, String)] {
    let start = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or(0);
    &instructions[start..]
}

/// The ports the stage's `EXPOSE` instructions list, protocol suffixes (`/tcp`) dropped.
pub fn exposed_ports(stage: &[(String, String)]) -> Vec<u16> {
    stage
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|p| {
            let port = p.split('/').next().unwrap_or(p);
            port.parse()
                .unwrap_or_else(|_| panic!("EXPOSE {p} is not a port"))
        })
        .collect()
}

/// The text after the stage's last `keyword` instruction (the one in force).
pub fn last<'a>(stage: &'a [(String, String)], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rfind(|(k, _)| k == keyword)
        .map(|(_, rest)| rest.as_str())
}

use super::*;

fn manifest(pins: &str) -> Manifest {
    let src = format!(
        "schema = 1\n[kubernetes]\nversion = \"v1.34.3\"\n[components]\ncontainerd = \"2.1.5\"\nrunc = \"1.3.4\"\n\
         cni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"3.5.25\"\n[sha256]\n{pins}"
    );
    Manifest::parse(std::path::Path::new("m.toml"), &src).unwrap()
}

#[test]
fn pins_match_by_url_or_path_and_an_unused_pin_names_its_line() {
    let d = Sha256::of(b"x");
    let probe = manifest("");
    let files = crate::catalog::manifest_files(&probe);
    let (a, b) = (&files[0], &files[1]);
    let m = manifest(&format!("\"{}\" = \"{d}\"\n\"{}\" = \"{d}\"\n", a.url, b.path));
    let pins = pins_by_path(&m, &files).unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[&a.path].key, a.url);
    assert_eq!(pins[&b.path].key, b.path);

    let m = manifest(&format!(
        "\"{}\" = \"{d}\"\n\"https://example.com/x\" = \"{d}\"\n",
        a.url
    ));
    let e = pins_by_path(&m, &files).unwrap_err().to_string();
    assert!(
        e.starts_with("m.toml:12:") && e.contains("https://example.com/x"),
        "{e}"
    );
}

#[test]
fn files_by_key_has_one_entry_per_url_and_path_first_file_winning() {
    let files = crate::catalog::manifest_files(&manifest(""));
    let by_key = files_by_key(&files);
    assert_eq!(by_key.len(), files.len() * 2);
    let mut twice = files.clone();
    twice.extend(files.iter().cloned().map(|mut f| {
        f.name = "second".into();
        f
    }));
    let by_key = files_by_key(&twice);
    assert_eq!(by_key.len(), files.len() * 2);
    assert!(by_key.values().all(|f| f.name != "second"));
}

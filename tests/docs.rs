//! The README says what the code does: its label table is the code's list of labels.

use quayside::discovery::labels::LABELS;

#[test]
fn the_readme_label_table_is_the_list_of_labels() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `quayside."))
        .collect();
    let want: Vec<String> = LABELS
        .iter()
        .map(|l| format!("| `quayside.{}` | {} |", l.name, l.meaning))
        .collect();
    assert_eq!(
        rows, want,
        "README.md's label table differs from discovery::labels::LABELS"
    );
}

/// Every route of the admin API is in the README (as `/path` or `METHOD /path`).
#[test]
fn the_readme_names_every_admin_route() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<&str> = quayside::admin::route_list()
        .iter()
        .map(|(path, _, _)| *path)
        .filter(|p| {
            *p != "/" && !readme.contains(&format!("`{p}")) && !readme.contains(&format!(" {p}"))
        })
        .collect();
    assert!(missing.is_empty(), "README.md does not name: {missing:?}");
}

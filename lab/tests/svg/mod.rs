//! Reading the charts back: each SVG must parse as XML, and its `<text>` elements say what it shows.

/// The text of every `<text>` element, in document order; panics if `svg` is not well-formed
/// SVG (XML whose root is `<svg>`).
pub fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            n.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect()
}

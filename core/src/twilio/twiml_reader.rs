//! Reads TwiML back into a tree: for tests that check documents element by element, and for the
//! simulator, which follows the webhooks' answers as Twilio does.

/// A parsed TwiML element.
#[derive(Debug, Clone)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<El>,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
    pub fn find(&self, name: &str) -> Option<&El> {
        self.children.iter().find_map(|c| if c.name == name { Some(c) } else { c.find(name) })
    }
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Result<El, String> {
    let utf8 = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string());
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        attrs.push((utf8(a.key.as_ref())?, a.unescape_value().map_err(|e| e.to_string())?.into_owned()));
    }
    Ok(El { name: utf8(e.name().as_ref())?, attrs, text: String::new(), children: vec![] })
}

/// Parses a TwiML document and returns its `<Response>`, or why it is not TwiML.
pub fn try_parse_twiml(doc: &str) -> Result<El, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut stack = vec![El { name: "#doc".into(), attrs: vec![], text: String::new(), children: vec![] }];
    loop {
        match reader.read_event().map_err(|e| format!("not well-formed XML: {e}"))? {
            Event::Start(e) => stack.push(element(&e)?),
            Event::Empty(e) => stack.last_mut().ok_or("unbalanced")?.children.push(element(&e)?),
            Event::Text(t) => stack.last_mut().ok_or("unbalanced")?.text.push_str(&t.unescape().map_err(|e| e.to_string())?),
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced")?;
                stack.last_mut().ok_or("unbalanced")?.children.push(el);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut doc = stack.pop().ok_or("unbalanced")?;
    match (doc.children.len(), doc.children.first().map(|c| c.name.as_str())) {
        (1, Some("Response")) => Ok(doc.children.remove(0)),
        _ => Err("the root element must be one <Response>".into()),
    }
}

/// Parses a TwiML document and returns its `<Response>`; panics otherwise (tests).
pub fn parse_twiml(doc: &str) -> El {
    try_parse_twiml(doc).unwrap_or_else(|e| panic!("{e}: {doc}"))
}

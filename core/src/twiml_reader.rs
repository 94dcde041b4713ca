//! Reads TwiML back into a tree, for tests that check documents element by element.

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

fn element(e: &quick_xml::events::BytesStart<'_>) -> El {
    El {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attrs: e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (String::from_utf8(a.key.as_ref().to_vec()).unwrap(), a.unescape_value().unwrap().into_owned())
            })
            .collect(),
        text: String::new(),
        children: vec![],
    }
}

/// Parses a TwiML document and returns its `<Response>`.
pub fn parse_twiml(doc: &str) -> El {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut stack = vec![El { name: "#doc".into(), attrs: vec![], text: String::new(), children: vec![] }];
    loop {
        match reader.read_event().expect("well-formed TwiML") {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => stack.last_mut().unwrap().children.push(element(&e)),
            Event::Text(t) => stack.last_mut().unwrap().text.push_str(&t.unescape().unwrap()),
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    assert_eq!(doc.children[0].name, "Response");
    doc.children[0].clone()
}

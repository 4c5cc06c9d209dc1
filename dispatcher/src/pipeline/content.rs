//! A templated message's content for one recipient: the stored record with the rendered
//! parts in place of its own, so every channel reads the recipient's language unchanged.

use herald_common::api::{ChatContent, PushContent, SmsContent};
use herald_engine::store::MessageRecord;

use crate::stages::templates::{Rendered, text_of_html};

/// `message` with `rendered` filled in (a part the template has replaces the message's).
pub fn apply(message: &MessageRecord, rendered: &Rendered) -> MessageRecord {
    let part = |name: &str| rendered.get(name).map(str::to_string);
    let mut out = message.clone();
    if let Some(t) = part("title") {
        out.title = Some(t);
    }
    if let Some(b) = part("body") {
        out.body = Some(b);
    }
    let (subject, text, html) = (
        part("email.subject"),
        part("email.text"),
        part("email.html"),
    );
    if subject.is_some() || text.is_some() || html.is_some() {
        let mut email = out.email.take().unwrap_or_default();
        email.subject = subject.or(email.subject);
        email.html = html.or(email.html);
        // A template with HTML and no text still gets a text part.
        email.text = text
            .or(email.text)
            .or_else(|| email.html.as_deref().map(text_of_html));
        out.email = Some(email);
    }
    if let Some(text) = part("sms.text") {
        out.sms = Some(SmsContent { text: Some(text) });
    }
    let (push_title, push_body) = (part("push.title"), part("push.body"));
    if push_title.is_some() || push_body.is_some() {
        let mut push: PushContent = out.push.take().unwrap_or_default();
        push.title = push_title.or(push.title);
        push.body = push_body.or(push.body);
        out.push = Some(push);
    }
    let (chat_text, chat_md) = (part("chat.text"), part("chat.markdown"));
    if chat_text.is_some() || chat_md.is_some() {
        let mut chat: ChatContent = out.chat.take().unwrap_or_default();
        chat.text = chat_text.or(chat.text);
        chat.markdown = chat_md.or(chat.markdown);
        out.chat = Some(chat);
    }
    out
}

/// Rendered content per message, locale and time zone (and user, for a template that
/// reads `user`), so the recipients of one message who would read the same text share one
/// render and one copy of the record. Entries are small in number and short-lived (a
/// message's recipients are delivered together); the map is emptied when it reaches its
/// bound.
#[derive(Default)]
pub struct Shared {
    entries: std::sync::Mutex<std::collections::HashMap<Key, std::sync::Arc<MessageRecord>>>,
}

/// Message id, locale, time zone, and the user when the render is personal.
pub type Key = (String, String, String, Option<String>);

const SHARED_LIMIT: usize = 4096;

impl Shared {
    pub fn get(&self, key: &Key) -> Option<std::sync::Arc<MessageRecord>> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: Key, content: std::sync::Arc<MessageRecord>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= SHARED_LIMIT {
                entries.clear();
            }
            entries.insert(key, content);
        }
    }
}

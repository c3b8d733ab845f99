//! What a pasted link is: a YouTube video, a Spotify track, or a plain media URL, turned into
//! the protocol's `Song`. Pure string work, unit-tested natively.

use unisono_core::song::{MAX_ID_LEN, Provider, Song};

/// The song a link (or bare id) names; `None` for empty input.
pub fn song_from_link(input: &str) -> Option<Song> {
    let s = input.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(id) = youtube_id(s) {
        return Some(Song {
            id: id.clone(),
            title: format!("YouTube {id}"),
            provider: Provider::Youtube,
            url: format!("https://www.youtube.com/watch?v={id}"),
            duration_ms: 0.0,
        });
    }
    if let Some(id) = spotify_track(s) {
        return Some(Song {
            id: id.clone(),
            title: format!("Spotify {id}"),
            provider: Provider::Spotify,
            url: format!("https://open.spotify.com/track/{id}"),
            duration_ms: 0.0,
        });
    }
    let title = s.split(['?', '#']).next().unwrap_or(s).rsplit('/').find(|p| !p.is_empty()).unwrap_or(s);
    Some(Song {
        id: truncate(s, MAX_ID_LEN),
        title: truncate(title, 200),
        provider: Provider::Url,
        url: s.to_owned(),
        duration_ms: 0.0,
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn youtube_id(s: &str) -> Option<String> {
    let rest = s.trim_start_matches("https://").trim_start_matches("http://").trim_start_matches("www.");
    let rest = rest.trim_start_matches("m.").trim_start_matches("music.");
    let id = if let Some(r) = rest.strip_prefix("youtu.be/") {
        r.split(['?', '&', '#', '/']).next()
    } else if let Some(r) = rest.strip_prefix("youtube.com/watch?") {
        r.split('&').find_map(|kv| kv.strip_prefix("v="))
    } else if let Some(r) = rest.strip_prefix("youtube.com/shorts/").or_else(|| rest.strip_prefix("youtube.com/embed/"))
    {
        r.split(['?', '&', '#', '/']).next()
    } else {
        None
    }?;
    is_id(id).then(|| id.to_owned())
}

fn spotify_track(s: &str) -> Option<String> {
    let id = if let Some(r) = s.strip_prefix("spotify:track:") {
        Some(r)
    } else {
        let rest = s.trim_start_matches("https://").trim_start_matches("http://");
        rest.strip_prefix("open.spotify.com/").and_then(|r| {
            // Optional locale segment: open.spotify.com/intl-de/track/ID
            let r = if r.starts_with("intl-") { r.split_once('/').map(|x| x.1).unwrap_or(r) } else { r };
            r.strip_prefix("track/").and_then(|r| r.split(['?', '#', '/']).next())
        })
    }?;
    is_id(id).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_songs() {
        let yt = song_from_link("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42").expect("song");
        assert_eq!((yt.id.as_str(), yt.provider), ("dQw4w9WgXcQ", Provider::Youtube));
        assert_eq!(song_from_link("https://youtu.be/dQw4w9WgXcQ?si=x").map(|s| s.id), Some("dQw4w9WgXcQ".into()));
        let sp = song_from_link("https://open.spotify.com/intl-de/track/4uLU6hMCjMI75M1A2tKUQC?si=1").expect("song");
        assert_eq!((sp.id.as_str(), sp.provider), ("4uLU6hMCjMI75M1A2tKUQC", Provider::Spotify));
        assert_eq!(song_from_link("spotify:track:abc").map(|s| s.provider), Some(Provider::Spotify));
        let url = song_from_link(" http://127.0.0.1:8080/media/tone.wav ").expect("song");
        assert_eq!(
            (url.title.as_str(), url.provider, url.url.as_str()),
            ("tone.wav", Provider::Url, "http://127.0.0.1:8080/media/tone.wav")
        );
        assert!(song_from_link("   ").is_none());
    }
}

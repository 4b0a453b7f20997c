//! `BACKUP TO 'directory'`: a consistent copy of the server's whole store, written by the server
//! into a directory on its machine (`rivulet backup --to DIR` sends it). A server started with
//! `--data-dir` on that directory has every table, view and job as of one instant.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::Result;
use crate::parse::{Statement, expected_error, is_bare_word, significant_tokens};

/// `tokens` as a BACKUP statement, if they are one (`None`: not a BACKUP at all).
pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let words = significant_tokens(tokens);
    if !words.first().is_some_and(|t| is_bare_word(t, "backup")) {
        return None;
    }
    Some(backup(sql, &words))
}

fn backup(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    if !words.get(1).is_some_and(|t| is_bare_word(t, "to")) {
        return Err(expected_error(sql, words.get(1).copied(), "TO 'directory'"));
    }
    let to = match words.get(2).map(|t| &t.token) {
        Some(Token::SingleQuotedString(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(expected_error(
                sql,
                words.get(2).copied(),
                "a directory as a string",
            ));
        }
    };
    if let Some(extra) = words.get(3) {
        return Err(expected_error(sql, Some(extra), "end of statement"));
    }
    Ok(Statement::Backup { to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_sql;

    #[test]
    fn backup_to_a_directory() {
        assert_eq!(
            parse_sql("backup to '/tmp/b 1';").unwrap()[0].statement,
            Statement::Backup {
                to: "/tmp/b 1".into()
            }
        );
        for (sql, near) in [
            ("BACKUP '/x'", "'/x'"),
            ("BACKUP TO x", "x"),
            ("BACKUP TO '/x' now", "now"),
        ] {
            let err = parse_sql(sql).unwrap_err().to_string();
            assert!(
                err.contains(&format!("at or near \"{near}\"")),
                "{sql}: {err}"
            );
        }
    }
}

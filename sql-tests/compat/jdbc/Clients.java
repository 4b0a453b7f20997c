// pgjdbc against a running Rivulet holding the table `bids` and the materialized view `per_auction`
// (see sql-tests/tests/compat_clients.rs): DatabaseMetaData as BI tools and IDEs call it, and
// queries. Run as: java -cp postgresql.jar:. Clients PORT. Prints one line per check and
// "N passed, M failed".
import java.sql.*;
import java.util.*;

public class Clients {
    static int passed = 0, failed = 0;
    static String url;

    interface Check { void run(Connection c) throws Exception; }

    static void check(String name, Check body) {
        try (Connection c = DriverManager.getConnection(url, "root", "")) {
            body.run(c);
            passed++;
            System.out.println("ok   " + name);
        } catch (Throwable e) {
            failed++;
            System.out.println("FAIL " + name + ": " + e);
        }
    }

    static void expect(Object actual, Object expected) {
        if (!Objects.equals(actual, expected)) {
            throw new AssertionError("expected " + expected + ", got " + actual);
        }
    }

    static List<String> rows(ResultSet rs, String... columns) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            StringJoiner row = new StringJoiner("|");
            for (String col : columns) row.add(String.valueOf(rs.getString(col)));
            out.add(row.toString());
        }
        return out;
    }

    public static void main(String[] args) {
        url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/dev";

        check("pgjdbc: getSchemas lists public", c -> {
            List<String> schemas = rows(c.getMetaData().getSchemas(), "TABLE_SCHEM");
            if (!schemas.contains("public")) throw new AssertionError(schemas.toString());
        });
        check("pgjdbc: getTables lists the table and the materialized view (ordered by type)", c -> {
            ResultSet rs = c.getMetaData().getTables(null, "public", "%", null);
            expect(rows(rs, "TABLE_NAME", "TABLE_TYPE"),
                List.of("per_auction|MATERIALIZED VIEW", "bids|TABLE"));
        });
        check("pgjdbc: getTables by type", c -> {
            ResultSet rs = c.getMetaData().getTables(null, null, "%", new String[] {"MATERIALIZED VIEW"});
            expect(rows(rs, "TABLE_NAME"), List.of("per_auction"));
        });
        check("pgjdbc: getColumns of the table", c -> {
            ResultSet rs = c.getMetaData().getColumns(null, "public", "bids", "%");
            expect(rows(rs, "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME", "NULLABLE"), List.of(
                "auction|-5|int8|0", "price|-5|int8|1", "channel|12|varchar|1", "ts|93|timestamp|1"));
        });
        check("pgjdbc: getColumns of the materialized view", c -> {
            ResultSet rs = c.getMetaData().getColumns(null, "public", "per_auction", "%");
            expect(rows(rs, "COLUMN_NAME", "TYPE_NAME"), List.of("auction|int8", "n|int8", "total|numeric"));
        });
        check("pgjdbc: getPrimaryKeys and getIndexInfo of a table without a key are empty", c -> {
            expect(rows(c.getMetaData().getPrimaryKeys(null, "public", "bids"), "COLUMN_NAME"), List.of());
            expect(rows(c.getMetaData().getIndexInfo(null, "public", "bids", false, true), "INDEX_NAME"), List.of());
        });
        check("pgjdbc: a primary key, its index and best row identifier, as on Postgres", c -> {
            c.createStatement().execute("CREATE TABLE lines (\"order\" INT, line INT, note TEXT, PRIMARY KEY (\"order\", line))");
            try {
                DatabaseMetaData m = c.getMetaData();
                expect(rows(m.getPrimaryKeys(null, "public", "lines"), "COLUMN_NAME", "KEY_SEQ", "PK_NAME"),
                    List.of("order|1|lines_pkey", "line|2|lines_pkey"));
                expect(rows(m.getIndexInfo(null, "public", "lines", true, true), "INDEX_NAME", "NON_UNIQUE", "COLUMN_NAME"),
                    List.of("lines_pkey|f|order", "lines_pkey|f|line"));
                expect(rows(m.getBestRowIdentifier(null, "public", "lines", DatabaseMetaData.bestRowSession, true), "COLUMN_NAME"),
                    List.of("order", "line"));
            } finally {
                c.createStatement().execute("DROP TABLE lines");
            }
        });
        check("pgjdbc: keys between tables, best row identifier and version columns, as on Postgres", c -> {
            DatabaseMetaData m = c.getMetaData();
            expect(rows(m.getImportedKeys(null, "public", "bids"), "FKCOLUMN_NAME"), List.of());
            expect(rows(m.getExportedKeys(null, "public", "bids"), "PKCOLUMN_NAME"), List.of());
            expect(rows(m.getCrossReference(null, "public", "bids", null, "public", "per_auction"), "FK_NAME"), List.of());
            expect(rows(m.getBestRowIdentifier(null, "public", "bids", DatabaseMetaData.bestRowSession, true), "COLUMN_NAME"), List.of());
            // pgjdbc's one version column, typed through its type cache (a catalog lookup by name).
            expect(rows(m.getVersionColumns(null, "public", "bids"), "COLUMN_NAME", "TYPE_NAME"), List.of("ctid|tid"));
        });
        check("pgjdbc: getTypeInfo lists the server's types with their JDBC types", c -> {
            Map<String, String> types = new HashMap<>();
            ResultSet rs = c.getMetaData().getTypeInfo();
            while (rs.next()) types.put(rs.getString("TYPE_NAME"), rs.getString("DATA_TYPE"));
            expect(types.get("int8"), String.valueOf(Types.BIGINT));
            expect(types.get("text"), String.valueOf(Types.VARCHAR));
            expect(types.get("timestamptz"), String.valueOf(Types.TIMESTAMP));
            expect(types.get("_int4"), String.valueOf(Types.ARRAY));
        });
        check("pgjdbc: PreparedStatement on the view, with ResultSetMetaData", c -> {
            PreparedStatement ps = c.prepareStatement("SELECT auction, n, total FROM per_auction WHERE auction >= ? ORDER BY auction");
            ps.setLong(1, 1);
            ResultSet rs = ps.executeQuery();
            ResultSetMetaData md = rs.getMetaData();
            expect(md.getColumnName(2) + ":" + md.getColumnTypeName(2), "n:int8");
            expect(rows(rs, "auction", "n", "total"), List.of("1|2|40", "2|1|20"));
        });
        check("pgjdbc: error SQLSTATE in a transaction, then rollback recovers", c -> {
            c.setAutoCommit(false);
            try {
                c.createStatement().executeQuery("SELECT * FROM no_such_table");
                throw new AssertionError("no error");
            } catch (SQLException e) {
                expect(e.getSQLState(), "42P01");
            }
            c.rollback();
            ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM bids");
            expect(rows(rs, "count"), List.of("3"));
        });

        // DBeaver's navigator (its PostgreSQL plugin reads through pgjdbc): databases, schemas, the
        // relations of a schema, the columns of one, and a view's definition for its DDL tab.
        check("dbeaver: databases", c -> {
            ResultSet rs = c.createStatement().executeQuery(
                "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datallowconn AND NOT datistemplate ORDER BY db.datname");
            expect(rows(rs, "datname"), List.of("dev"));
        });
        check("dbeaver: schemas, then the relations of public with their kinds", c -> {
            ResultSet ns = c.createStatement().executeQuery(
                "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n\n"
                    + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass\n"
                    + "ORDER BY nspname");
            long publicOid = -1;
            while (ns.next()) if (ns.getString("nspname").equals("public")) publicOid = ns.getLong("oid");
            if (publicOid < 0) throw new AssertionError("no public schema");
            PreparedStatement ps = c.prepareStatement(
                "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  pg_catalog.pg_get_partkeydef(c.oid) as partition_key \n"
                    + "FROM pg_catalog.pg_class c\n"
                    + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass\n"
                    + "WHERE c.relnamespace=? AND c.relkind not in ('i','I','c')");
            ps.setLong(1, publicOid);
            List<String> relations = rows(ps.executeQuery(), "relname", "relkind");
            Collections.sort(relations);
            expect(relations, List.of("bids|r", "per_auction|m"));
        });
        check("dbeaver: columns of the materialized view, then its definition", c -> {
            ResultSet rel = c.createStatement().executeQuery(
                "SELECT oid FROM pg_catalog.pg_class WHERE relname = 'per_auction'");
            rel.next();
            long oid = rel.getLong(1);
            PreparedStatement ps = c.prepareStatement(
                "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description,dep.objid\n"
                    + "FROM pg_catalog.pg_attribute a\n"
                    + "INNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid)\n"
                    + "LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum)\n"
                    + "LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)\n"
                    + "LEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid\n"
                    + "WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=?\n"
                    + "ORDER BY a.attnum");
            ps.setLong(1, oid);
            expect(rows(ps.executeQuery(), "attname"), List.of("auction", "n", "total"));
            PreparedStatement def = c.prepareStatement("SELECT pg_catalog.pg_get_viewdef(?, true)");
            def.setLong(1, oid);
            ResultSet d = def.executeQuery();
            d.next();
            String text = d.getString(1);
            if (text == null || !text.contains("GROUP BY auction")) throw new AssertionError(text);
        });

        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}

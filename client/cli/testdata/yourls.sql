-- MySQL dump 10.13
DROP TABLE IF EXISTS `yourls_url`;
CREATE TABLE `yourls_url` (`keyword` varchar(100) NOT NULL);
INSERT INTO `yourls_options` VALUES (1,'version','1.9');
INSERT INTO `yourls_url` VALUES ('sql-ozh','https://ozh.org/','Ozh','2026-03-01 12:00:00','10.0.0.1',42),('sql-two','https://example.com/it\'s','It''s','2026-03-02 12:00:00','10.0.0.2',0);
